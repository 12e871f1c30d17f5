# Follows "torch.func Whirlwind Tour" (torch.func docs):
# https://pytorch.org/docs/stable/func.whirlwind_tour.html
# grad and grad of grad, vmap of a batched dot product and of a model over a batch,
# vjp, jvp, jacrev, jacfwd and hessian, each on small deterministic inputs.
import torch
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vjp, vmap

x = torch.tensor(0.7)
print(grad(lambda t: torch.sin(t))(x), x.cos())
print(grad(grad(lambda t: torch.sin(t)))(x), -x.sin())

weights = torch.linspace(-1.0, 1.0, 5)
examples = torch.linspace(0.0, 2.0, 15).reshape(3, 5)


def model(feature_vec):
    return feature_vec.dot(weights).relu()


print(vmap(model)(examples))
print(torch.allclose(vmap(model)(examples), torch.stack([model(e) for e in examples])))

points = torch.linspace(-1.0, 1.0, 4)
out, vjp_fn = vjp(torch.sin, points)
print(out)
print(vjp_fn(torch.ones(4)))
print(jvp(torch.sin, (points,), (torch.ones(4),)))

print(jacrev(torch.sin)(points))
print(jacfwd(torch.sin)(points))
print(jacrev(lambda a, b: a * b.exp(), argnums=(0, 1))(points, points.flip(0)))
print(hessian(lambda t: (t.sin() * t).sum())(points))
