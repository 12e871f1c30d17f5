# Follows the BatchNorm1d / BatchNorm2d reference pages:
# https://pytorch.org/docs/stable/generated/torch.nn.BatchNorm2d.html
# Batch statistics while training, running_mean / running_var / num_batches_tracked moving by
# momentum (and the cumulative average with momentum=None), eval mode reading the running
# statistics, affine=False, and gradients through the normalization.
import torch
import torch.nn as nn

x = torch.linspace(-2.0, 3.0, 2 * 3 * 2 * 2).reshape(2, 3, 2, 2)

bn = nn.BatchNorm2d(3)
print(bn)
print(sorted(bn.state_dict().keys()))
y = bn(x)
print(y.grad_fn)
print(y.std(dim=(0, 2, 3), unbiased=False))
print(bn.running_mean, bn.running_var, bn.num_batches_tracked)
for k in range(3):
    bn(x * (k + 1))
print(bn.running_mean)
print(bn.running_var)
print(bn.num_batches_tracked)

bn.eval()
z = bn(x)
print(z[0, :, 0, 0])
print(bn.num_batches_tracked)

cumulative = nn.BatchNorm1d(4, momentum=None, affine=False)
print(cumulative)
for k in range(3):
    cumulative(torch.arange(8.0).reshape(2, 4) * (k + 1))
print(cumulative.running_mean, cumulative.running_var)

layer = nn.BatchNorm1d(3)
with torch.no_grad():
    layer.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
    layer.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
inputs = torch.tensor([[1.0, 2.0, 0.5], [3.0, -1.0, 0.0], [2.0, 0.0, 4.0], [0.0, 1.0, 1.0]], requires_grad=True)
out = layer(inputs)
(out * torch.arange(12.0).reshape(4, 3)).sum().backward()
print(out)
print(inputs.grad)
print(layer.weight.grad, layer.bias.grad)
