# Follows "A Gentle Introduction to torch.autograd" (PyTorch beginner blitz):
# https://pytorch.org/tutorials/beginner/blitz/autograd_tutorial.html
# Differentiation in autograd: Q = 3a^3 - b^2 with an external gradient, checked against the
# analytic derivatives; which results require grad; the DAG's grad_fn chain.
import torch

a = torch.tensor([2.0, 3.0], requires_grad=True)
b = torch.tensor([6.0, 4.0], requires_grad=True)
Q = 3 * a**3 - b**2
print(Q)
external_grad = torch.tensor([1.0, 1.0])
Q.backward(gradient=external_grad)
print(a.grad, b.grad)
print(9 * a**2 == a.grad)
print(-2 * b == b.grad)

# Exclusion from the DAG: only results of tensors that require grad do.
x = torch.ones(5, 5)
y = torch.zeros(5, 5)
z = torch.full((5, 5), 0.5, requires_grad=True)
print(f"Does `a` require gradients?: {(x + y).requires_grad}")
print(f"Does `b` require gradients?: {(x + z).requires_grad}")

# Walking the graph back from the result.
node = Q.grad_fn
names = []
while node is not None:
    names.append(type(node).__name__)
    node = node.next_functions[0][0] if node.next_functions else None
print(names)
