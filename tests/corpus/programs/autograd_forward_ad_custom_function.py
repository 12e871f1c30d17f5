# Follows "Forward-mode Automatic Differentiation" (PyTorch tutorials, intermediate):
# https://pytorch.org/tutorials/intermediate/forward_ad_usage.html
# Dual tensors, unpack_dual's named tuple (the tangent passed in is the one you get back), and a
# custom Function with a jvp staticmethod and save_for_forward, checked against reverse mode.
import torch
import torch.autograd.forward_ad as fwAD

primal = torch.tensor([0.2, -0.4, 1.3])
tangent = torch.tensor([1.0, 0.0, 2.0])


def fn(x, y):
    return x ** 2 + y ** 2


with fwAD.dual_level():
    dual_input = fwAD.make_dual(primal, tangent)
    unpacked = fwAD.unpack_dual(dual_input)
    print(type(unpacked).__name__, unpacked._fields)
    print(unpacked.tangent is tangent, unpacked[1] is tangent)
    out = fn(dual_input, primal)
    jvp = fwAD.unpack_dual(out).tangent
    print(jvp)
print(fwAD.unpack_dual(dual_input).tangent)


class Exp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, foo):
        result = foo.exp()
        ctx.result = result
        return result

    @staticmethod
    def jvp(ctx, grad_foo):
        return grad_foo * ctx.result


class ScaledSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_forward(x)
        ctx.scale = scale
        ctx.save_for_backward(x)
        return scale * x * x

    @staticmethod
    def jvp(ctx, x_tangent, scale_tangent):
        print("scale's tangent:", scale_tangent)
        (x,) = ctx.saved_tensors
        return 2 * ctx.scale * x * x_tangent

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return 2 * ctx.scale * x * grad_output, None


with fwAD.dual_level():
    dual_input = fwAD.make_dual(primal, tangent)
    print(fwAD.unpack_dual(Exp.apply(dual_input)).tangent)
    print(fwAD.unpack_dual(ScaledSquare.apply(dual_input, 3.0)).tangent)

x = primal.clone().requires_grad_()
(grad,) = torch.autograd.grad(ScaledSquare.apply(x, 3.0), x, tangent)
print(grad)


class ReverseOnly(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


with fwAD.dual_level():
    try:
        ReverseOnly.apply(fwAD.make_dual(primal, tangent))
    except NotImplementedError as error:
        print("NotImplementedError:", error)
