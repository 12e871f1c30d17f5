# Follows "Double Backward with Custom Functions" (PyTorch tutorials, intermediate):
# https://pytorch.org/tutorials/intermediate/custom_function_double_backward_tutorial.html
# Saving an input (double backward just works), saving an output, saving an intermediate by
# returning it as an output, and once_differentiable refusing a second derivative; every Function
# checked with gradcheck and gradgradcheck.
import torch
from torch.autograd.function import once_differentiable


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 2

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * 2 * x


x = torch.tensor([[0.2, -0.7, 1.1], [0.5, 0.9, -1.3]], dtype=torch.double, requires_grad=True)
print(torch.autograd.gradcheck(Square.apply, x), torch.autograd.gradgradcheck(Square.apply, x))
out = Square.apply(x)
(grad_x,) = torch.autograd.grad(out.sum(), x, create_graph=True)
print(grad_x.tolist())
print(grad_x.grad_fn.name())
(grad_grad_x,) = torch.autograd.grad(grad_x.sum(), x)
print(grad_grad_x.tolist())


class Exp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        result = torch.exp(x)
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad_out):
        (result,) = ctx.saved_tensors
        return result * grad_out


print(torch.autograd.gradcheck(Exp.apply, x), torch.autograd.gradgradcheck(Exp.apply, x))
(g,) = torch.autograd.grad(Exp.apply(x).sum(), x, create_graph=True)
print(g.grad_fn.name(), [n.name() for n, _ in g.grad_fn.next_functions if n is not None])


class Sinh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        expx = torch.exp(x)
        expnegx = torch.exp(-x)
        ctx.save_for_backward(expx, expnegx)
        return (expx - expnegx) / 2, expx, expnegx

    @staticmethod
    def backward(ctx, grad_out, grad_expx, grad_expnegx):
        expx, expnegx = ctx.saved_tensors
        grad_input = grad_out * (expx + expnegx) / 2
        grad_input += grad_expx * expx
        grad_input -= grad_expnegx * expnegx
        return grad_input


def sinh(x):
    return Sinh.apply(x)[0]


print(torch.autograd.gradcheck(sinh, x), torch.autograd.gradgradcheck(sinh, x))
value, exp_x, exp_neg_x = Sinh.apply(x)
product = value * exp_x * exp_neg_x
print(value.grad_fn is exp_x.grad_fn, [i for _, i in product.grad_fn.next_functions[0][0].next_functions])


class SinhOnce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        expx = torch.exp(x)
        expnegx = torch.exp(-x)
        ctx.save_for_backward(expx, expnegx)
        return (expx - expnegx) / 2

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        expx, expnegx = ctx.saved_tensors
        return grad_out * (expx + expnegx) / 2


print(torch.autograd.gradcheck(SinhOnce.apply, x))
v = torch.ones_like(x, requires_grad=True)
(g,) = torch.autograd.grad(SinhOnce.apply(x), x, v, create_graph=True)
try:
    g.sum().backward()
except RuntimeError as error:
    print("RuntimeError:", error)
