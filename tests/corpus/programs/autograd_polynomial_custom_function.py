# Follows "PyTorch: Defining New autograd Functions" (Learning PyTorch with Examples):
# https://pytorch.org/tutorials/beginner/examples_autograd/polynomial_custom_function.html
# A custom Function for the Legendre polynomial P3(x) = (5x^3 - 3x) / 2 and its derivative, used
# in a small model y = a + b P3(c + d x) fitted to sin(x) by hand-written gradient descent.
import math

import torch


class Legendre3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 0.5 * (5 * x ** 3 - 3 * x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * 1.5 * (5 * x ** 2 - 1)


x = torch.linspace(-math.pi, math.pi, 200)
y = torch.sin(x)
a = torch.tensor(0.0, requires_grad=True)
b = torch.tensor(-1.0, requires_grad=True)
c = torch.tensor(0.0, requires_grad=True)
d = torch.tensor(0.3, requires_grad=True)

learning_rate = 5e-6
for step in range(300):
    p3 = Legendre3.apply
    prediction = a + b * p3(c + d * x)
    loss = (prediction - y).pow(2).sum()
    if step % 100 == 99:
        print(step, round(loss.item(), 3))
    loss.backward()
    with torch.no_grad():
        for parameter in (a, b, c, d):
            parameter -= learning_rate * parameter.grad
            parameter.grad = None

print(f"y = {a.item():.4f} + {b.item():.4f} * P3({c.item():.4f} + {d.item():.4f} x)")
print(prediction.grad_fn.name(), prediction.grad_fn.next_functions[1][0].next_functions[1][0].name())
