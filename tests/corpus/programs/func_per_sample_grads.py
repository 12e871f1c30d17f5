# Follows "Per-sample-gradients" (PyTorch tutorials, torch.func):
# https://pytorch.org/tutorials/intermediate/per_sample_grads.html
# The tutorial's model is a small CNN; this program uses a two-layer MLP (the same steps:
# parameters detached into a dict, a loss for one sample through functional_call,
# vmap(grad(loss), in_dims=(None, 0, 0)), and the check against a loop of backward passes).
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 8)
        self.fc2 = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


model = Net()
with torch.no_grad():
    for i, p in enumerate(model.parameters()):
        p.copy_(torch.linspace(-0.3, 0.3, p.numel()).reshape(p.shape) * (i + 1))

batch_size = 4
data = torch.linspace(-1.0, 1.0, batch_size * 6).reshape(batch_size, 6)
targets = torch.tensor([0, 2, 1, 2])


def compute_grad(sample, target):
    loss = F.cross_entropy(model(sample.unsqueeze(0)), target.unsqueeze(0))
    return torch.autograd.grad(loss, list(model.parameters()))


looped = [compute_grad(data[i], targets[i]) for i in range(batch_size)]
looped = [torch.stack(shards) for shards in zip(*looped)]

params = {k: v.detach() for k, v in model.named_parameters()}
buffers = {k: v.detach() for k, v in model.named_buffers()}


def compute_loss(params, buffers, sample, target):
    predictions = functional_call(model, (params, buffers), (sample.unsqueeze(0),))
    return F.cross_entropy(predictions, target.unsqueeze(0))


per_sample = vmap(grad(compute_loss), in_dims=(None, None, 0, 0))(params, buffers, data, targets)
for (name, g), expected in zip(per_sample.items(), looped):
    print(name, tuple(g.shape), torch.allclose(g, expected, atol=1e-6))
print(per_sample["fc1.weight"].abs().sum(dim=(1, 2)))
