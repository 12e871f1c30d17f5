# Follows "UX Limitations" (torch.func docs):
# https://pytorch.org/docs/stable/func.ux_limitations.html
# What vmap refuses, with PyTorch's messages: .item() and data-dependent control flow on a
# batched tensor, random operations under the default randomness='error'; and the rewrites
# the page suggests (torch.where instead of an if on a value).
import torch
from torch.func import grad, vmap

x = torch.linspace(-1.0, 1.0, 6).reshape(3, 2)


def report(fn, *args):
    try:
        print(fn(*args))
    except RuntimeError as error:
        print("RuntimeError:", str(error).split(".")[0])


report(vmap(lambda t: t.sum().item()), x)
report(vmap(lambda t: t if t.sum() > 0 else -t), x)
report(vmap(lambda t: torch.where(t.sum() > 0, t, -t)), x)
report(vmap(lambda t: t + torch.randn(2)), x)
report(vmap(lambda t: torch.nn.functional.dropout(t, 0.5)), x)
report(grad(lambda t: torch.where(t > 0, t**2, -t).sum()), x[0])
