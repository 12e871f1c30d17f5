# Follows "Extending PyTorch", the section "Extending torch.autograd" (PyTorch notes):
# https://pytorch.org/docs/stable/notes/extending.html
# A linear layer as a custom Function (needs_input_grad, None for unneeded gradients), a Function
# with a non-tensor argument, the separate forward + setup_context style, mark_non_differentiable,
# set_materialize_grads, gradcheck on the Functions, and forward mode through a jvp staticmethod.
import torch
import torch.autograd.forward_ad as fwAD
from torch.autograd import Function, gradcheck


class AffineMap(Function):
    @staticmethod
    def forward(ctx, inputs, weight, bias=None):
        ctx.save_for_backward(inputs, weight, bias)
        out = inputs.mm(weight.t())
        if bias is not None:
            out = out + bias.unsqueeze(0).expand_as(out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        inputs, weight, bias = ctx.saved_tensors
        grad_inputs = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_inputs = grad_out.mm(weight)
        if ctx.needs_input_grad[1]:
            grad_weight = grad_out.t().mm(inputs)
        if bias is not None and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(0)
        return grad_inputs, grad_weight, grad_bias


data = torch.linspace(-1.0, 1.0, 6).reshape(2, 3)
weight = torch.linspace(0.5, -0.5, 12).reshape(4, 3).requires_grad_()
bias = torch.tensor([0.1, 0.2, -0.3, 0.0], requires_grad=True)
out = AffineMap.apply(data, weight, bias)
print(out)
print(out.grad_fn.name(), [type(n).__name__ if n is not None else None for n, _ in out.grad_fn.next_functions])
out.pow(2).sum().backward()
print(weight.grad)
print(bias.grad)
print(data.grad)


class ScaleBy(Function):
    @staticmethod
    def forward(ctx, tensor, constant):
        ctx.constant = constant
        return tensor * constant

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * ctx.constant, None


x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
ScaleBy.apply(x, 2.5).sum().backward()
print(x.grad)


class Softsign(Function):
    @staticmethod
    def forward(x):
        return x / (1 + x.abs())

    @staticmethod
    def setup_context(ctx, inputs, output):
        (x,) = inputs
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output / (1 + x.abs()) ** 2


x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
y = Softsign.apply(x)
y.sum().backward()
print(y)
print(x.grad)


class ArgmaxAndMax(Function):
    @staticmethod
    def forward(ctx, x):
        index = x.argmax()
        ctx.mark_non_differentiable(index)
        ctx.save_for_backward(index)
        ctx.size = x.numel()
        return x.max(), index

    @staticmethod
    def backward(ctx, grad_max, grad_index):
        (index,) = ctx.saved_tensors
        grad = torch.zeros(ctx.size)
        grad[index] = grad_max
        return grad


x = torch.tensor([0.3, 2.0, -1.0], requires_grad=True)
value, index = ArgmaxAndMax.apply(x)
print(value, index, index.requires_grad)
value.backward()
print(x.grad)


class KeepFirst(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.set_materialize_grads(False)
        return x.clone(), x.clone()

    @staticmethod
    def backward(ctx, g1, g2):
        print("second gradient is None:", g2 is None)
        grad = torch.zeros_like(g1) if g1 is not None else None
        if g1 is not None:
            grad = grad + g1
        if g2 is not None:
            grad = grad + g2
        return grad


x = torch.tensor([1.0, 2.0], requires_grad=True)
first, _ = KeepFirst.apply(x)
(first * 3).sum().backward()
print(x.grad)

double_data = torch.linspace(-1.0, 1.0, 6, dtype=torch.double).reshape(2, 3).requires_grad_()
double_weight = torch.linspace(0.3, -0.4, 12, dtype=torch.double).reshape(4, 3).requires_grad_()
print(gradcheck(AffineMap.apply, (double_data, double_weight), eps=1e-6, atol=1e-4))
print(gradcheck(Softsign.apply, (torch.tensor([-1.5, 0.3, 2.0], dtype=torch.double, requires_grad=True),)))


class Cube(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_forward(x)
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return 3 * x ** 2 * grad_output

    @staticmethod
    def jvp(ctx, x_tangent):
        (x,) = ctx.saved_tensors
        return 3 * x ** 2 * x_tangent


primal = torch.tensor([1.0, -2.0, 0.5])
tangent = torch.tensor([1.0, 1.0, 2.0])
with fwAD.dual_level():
    dual = fwAD.make_dual(primal, tangent)
    out = Cube.apply(dual)
    print(fwAD.unpack_dual(out).tangent)
