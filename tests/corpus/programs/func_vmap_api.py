# Follows the torch.func.vmap reference (torch.func API docs):
# https://pytorch.org/docs/stable/generated/torch.func.vmap.html
# in_dims and out_dims (ints, None, nested tuples), several inputs, nested vmap for a
# batched matrix of dot products, chunk_size, keyword arguments, and randomness='same'.
import torch
from torch.func import vmap

x = torch.linspace(-1.0, 1.0, 15).reshape(3, 5)
y = torch.linspace(0.0, 2.0, 15).reshape(3, 5)

batched_dot = vmap(torch.dot)
print(batched_dot(x, y))

print(vmap(torch.mul, in_dims=(0, None))(x, torch.linspace(1.0, 2.0, 5)))
print(vmap(lambda a: a.sum(), in_dims=1)(x))
print(tuple(vmap(lambda a: a * 2, out_dims=1)(x).shape))
print(vmap(lambda pair: pair[0] * pair[1], in_dims=((0, 1),))((x, y.t())))


def outer_dims(a, b):
    return a.unsqueeze(1) * b, a.sum()


print(vmap(outer_dims, out_dims=(1, 0))(x, y))

matrix_of_dots = vmap(vmap(torch.dot, in_dims=(None, 0)), in_dims=(0, None))(x, y)
print(matrix_of_dots)
print(torch.allclose(matrix_of_dots, x @ y.t()))

print(torch.allclose(vmap(torch.sin, chunk_size=2)(x), x.sin()))


def scaled(a, *, scale):
    return a * scale


print(vmap(scaled)(x, scale=3.0))

same = vmap(lambda a: a + torch.rand(5), randomness="same")(torch.zeros(3, 5))
print(torch.equal(same[0], same[1]), torch.equal(same[1], same[2]))
different = vmap(lambda a: a + torch.rand(5), randomness="different")(torch.zeros(3, 5))
print(torch.equal(different[0], different[1]))
