# Follows the torch.func.functional_call reference (torch.func API docs):
# https://pytorch.org/docs/stable/generated/torch.func.functional_call.html
# A module called with other parameters (a dict, or a tuple of dicts), the module's own
# parameters untouched afterwards, and gradients of a loss with respect to a parameter
# dict with grad and with jacrev.
import torch
from torch.func import functional_call, grad, jacrev

model = torch.nn.Linear(3, 2)
with torch.no_grad():
    model.weight.copy_(torch.linspace(-1.0, 1.0, 6).reshape(2, 3))
    model.bias.copy_(torch.tensor([0.5, -0.5]))
x = torch.linspace(0.0, 1.0, 6).reshape(2, 3)

doubled = {name: p * 2 for name, p in model.named_parameters()}
print(functional_call(model, doubled, (x,)))
print(functional_call(model, ({"weight": doubled["weight"]}, {"bias": torch.zeros(2)}), x))
print(model(x))
print(model.weight)

params = {name: p.detach() for name, p in model.named_parameters()}


def loss(params, x):
    return functional_call(model, params, (x,)).pow(2).sum()


gradients = grad(loss)(params, x)
print(gradients["weight"])
print(gradients["bias"])
jacobians = jacrev(lambda p: functional_call(model, p, (x,)))(params)
print(tuple(jacobians["weight"].shape), jacobians["bias"][1])
