# Follows the LayerNorm reference page and the gradient-clipping utilities' pages:
# https://pytorch.org/docs/stable/generated/torch.nn.LayerNorm.html
# https://pytorch.org/docs/stable/generated/torch.nn.utils.clip_grad_norm_.html
# LayerNorm over the last one and two axes (with and without the affine parameters), the
# activations LeakyReLU / ELU / SiLU, then clip_grad_norm_ and parameters_to_vector on a model.
import torch
import torch.nn as nn

batch, sentence_length, embedding_dim = 2, 3, 4
embedding = torch.linspace(-1.0, 2.0, batch * sentence_length * embedding_dim).reshape(
    batch, sentence_length, embedding_dim)
layer_norm = nn.LayerNorm(embedding_dim)
print(layer_norm)
out = layer_norm(embedding)
print(out.grad_fn.name())
print(out[0])
print(nn.LayerNorm([sentence_length, embedding_dim], elementwise_affine=False)(embedding)[1])

x = torch.linspace(-3.0, 3.0, 7, requires_grad=True)
for activation in (nn.LeakyReLU(0.1), nn.ELU(alpha=0.5), nn.SiLU()):
    y = activation(x)
    y.sum().backward()
    print(activation, y.grad_fn.name())
    print(y)
    print(x.grad)
    x.grad = None

model = nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.SiLU(), nn.Linear(5, 2))
with torch.no_grad():
    for i, p in enumerate(model.parameters()):
        p.copy_(torch.linspace(-1.0, 1.0, p.numel()).reshape(p.shape) * (i + 1))
loss = model(embedding[0, :, :]).pow(2).sum()
loss.backward()
total = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
print(total)
print(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters())))
vector = nn.utils.parameters_to_vector(model.parameters())
print(tuple(vector.shape), vector[:6])
nn.utils.vector_to_parameters(vector * 0.5, model.parameters())
print(model[0].weight[0], model[1].bias)
