# Follows the API pages of torch.autograd.Function's context methods (PyTorch docs):
# https://pytorch.org/docs/stable/generated/torch.autograd.function.FunctionCtx.mark_dirty.html
# mark_dirty (an input modified in place gets the Function as its history), the error for a leaf,
# mark_non_differentiable, set_materialize_grads, saved-tensor version checks, needs_input_grad.
import torch
from torch.autograd import Function


class AddOneInPlace(Function):
    @staticmethod
    def forward(ctx, x):
        x.add_(1)
        ctx.mark_dirty(x)
        return x

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


a = torch.tensor([1.0, 2.0], requires_grad=True)
b = a.clone()
version = b._version
c = AddOneInPlace.apply(b)
print(c is b, b._version - version, c.grad_fn.name(), c.grad_fn.next_functions[0][0].name())
(c * c).sum().backward()
print(a.grad)
try:
    AddOneInPlace.apply(a)
except RuntimeError as error:
    print("RuntimeError:", error)


class Sort(Function):
    @staticmethod
    def forward(ctx, x):
        rank = (x.unsqueeze(0) < x.unsqueeze(1)).sum(1)
        ordered = torch.zeros_like(x)
        ordered[rank] = x
        ctx.mark_non_differentiable(rank)
        ctx.save_for_backward(rank)
        return ordered, rank

    @staticmethod
    def backward(ctx, grad_ordered, grad_rank):
        (rank,) = ctx.saved_tensors
        return grad_ordered[rank]


x = torch.tensor([3.0, 1.0, 2.0], requires_grad=True)
ordered, rank = Sort.apply(x)
print(ordered, rank, rank.requires_grad)
(ordered * torch.tensor([1.0, 10.0, 100.0])).sum().backward()
print(x.grad)


class Twice(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x)
        return x.clone(), x.clone()

    @staticmethod
    def backward(ctx, g1, g2):
        print("needs_input_grad:", ctx.needs_input_grad, "g1 None:", g1 is None, "g2 None:", g2 is None)
        (x,) = ctx.saved_tensors
        grad = torch.zeros_like(x)
        if g1 is not None:
            grad = grad + g1
        if g2 is not None:
            grad = grad + 2 * g2
        return grad


x = torch.tensor([1.0, 2.0], requires_grad=True)
_, second = Twice.apply(x)
second.sum().backward()
print(x.grad)


class Reciprocal(Function):
    @staticmethod
    def forward(ctx, x):
        result = 1 / x
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad_output):
        (result,) = ctx.saved_tensors
        return -grad_output * result * result


x = torch.tensor([2.0, 4.0], requires_grad=True)
y = Reciprocal.apply(x)
y.mul_(3)
try:
    y.sum().backward()
except RuntimeError as error:
    print("RuntimeError:", str(error).split("]], ")[1].split(" Hint")[0])

y = Reciprocal.apply(x)
y.sum().backward(retain_graph=True)
y.sum().backward()
print(x.grad)
try:
    y.sum().backward()
except RuntimeError as error:
    print("RuntimeError:", str(error)[:70])
