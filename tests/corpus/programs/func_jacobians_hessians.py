# Follows "Jacobians, Hessians, hvp, vhp, and more: composing function transforms"
# (PyTorch tutorials): https://pytorch.org/tutorials/intermediate/jacobians_hessians.html
# A Jacobian by vjp and vmap, then jacrev, jacfwd, argnums, batched Jacobians with vmap,
# Hessians as jacfwd(jacrev) and hessian, and hvp as forward-over-reverse.
import torch
from torch.func import hessian, jacfwd, jacrev, jvp, vjp, vmap


def predict(weight, bias, x):
    return torch.nn.functional.linear(x, weight, bias).tanh()


D = 4
weight = torch.linspace(-1.0, 1.0, D * D).reshape(D, D)
bias = torch.linspace(0.0, 0.3, D)
x = torch.linspace(-0.5, 0.5, D)

_, vjp_fn = vjp(lambda t: predict(weight, bias, t), x)
unit_vectors = torch.eye(D)
rows = [vjp_fn(v)[0] for v in unit_vectors]
jacobian_by_rows = torch.stack(rows)
jacobian_by_vmap = vmap(vjp_fn)(unit_vectors)[0]
print(jacobian_by_vmap)
print(torch.allclose(jacobian_by_rows, jacobian_by_vmap))

print(jacrev(predict, argnums=2)(weight, bias, x))
print(torch.allclose(jacfwd(predict, argnums=2)(weight, bias, x), jacobian_by_vmap))
weight_jacobian, bias_jacobian = jacrev(predict, argnums=(0, 1))(weight, bias, x)
print(tuple(weight_jacobian.shape), bias_jacobian)

xs = torch.linspace(-1.0, 1.0, 3 * D).reshape(3, D)
batched = vmap(jacrev(predict, argnums=2), in_dims=(None, None, 0))(weight, bias, xs)
print(tuple(batched.shape))
print(batched[1])
print(torch.allclose(batched[2], jacrev(predict, argnums=2)(weight, bias, xs[2])))

hess_composed = jacfwd(jacrev(predict, argnums=2), argnums=2)(weight, bias, x)
hess = hessian(predict, argnums=2)(weight, bias, x)
print(tuple(hess.shape), torch.allclose(hess, hess_composed, atol=1e-6))
print(hess[0])
batched_hess = vmap(hessian(predict, argnums=2), in_dims=(None, None, 0))(weight, bias, xs)
print(tuple(batched_hess.shape))


def hvp(f, primals, tangents):
    return jvp(jacrev(f), primals, tangents)[1]


def scalar(t):
    return t.sin().sum()


print(hvp(scalar, (x,), (torch.ones(D),)))
print(hessian(scalar)(x) @ torch.ones(D))
