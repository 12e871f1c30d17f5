# Follows "Model ensembling" (PyTorch tutorials, torch.func):
# https://pytorch.org/tutorials/intermediate/ensembling.html
# Several MLPs of one architecture stacked with stack_module_state, run at once with
# vmap over functional_call: each model on its own minibatch, and all models on one.
import torch
from torch.func import functional_call, stack_module_state, vmap


class SimpleMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(5, 6)
        self.fc2 = torch.nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


num_models = 3
models = []
for m in range(num_models):
    model = SimpleMLP()
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.linspace(-1.0, 1.0, p.numel()).reshape(p.shape) * (0.3 + 0.2 * m + 0.1 * i))
    models.append(model)

data = torch.linspace(-1.0, 1.0, num_models * 4 * 5).reshape(num_models, 4, 5)
minibatch = data[0]

predictions_diff = [model(data[i]) for i, model in enumerate(models)]
predictions_same = [model(minibatch) for model in models]

params, buffers = stack_module_state(models)
print(sorted((k, tuple(v.shape)) for k, v in params.items()))



def fmodel(params, buffers, x):
    return functional_call(models[0], (params, buffers), (x,))


batched_diff = vmap(fmodel)(params, buffers, data)
print(tuple(batched_diff.shape), torch.allclose(batched_diff, torch.stack(predictions_diff), atol=1e-6))
batched_same = vmap(fmodel, in_dims=(0, 0, None))(params, buffers, minibatch)
print(tuple(batched_same.shape), torch.allclose(batched_same, torch.stack(predictions_same), atol=1e-6))
print(batched_same[2])
