# Follows "Hooks for autograd saved tensors" (PyTorch tutorials, intermediate):
# https://pytorch.org/tutorials/intermediate/autograd_saved_tensors_hooks_tutorial.html
# Which tensors a graph saves (grad_fn._saved_self, _saved_result), hooks on one saved tensor
# (_raw_saved_self.register_hooks), hooks on every saved tensor (saved_tensors_hooks), and
# save_on_cpu.
import torch

a = torch.linspace(0.5, 2.0, 4, requires_grad=True)
b = a.pow(2)
print(b.grad_fn._saved_self is a, b.grad_fn._saved_exponent)
c = a.exp()
print(c.grad_fn._saved_result.equal(c), c.grad_fn._saved_result is c)
d = a.sin() * a
print(d.grad_fn._saved_self.tolist(), d.grad_fn._saved_other is a)

log = []


def pack_hook(x):
    log.append(("pack", tuple(x.shape)))
    return x


def unpack_hook(x):
    log.append(("unpack", tuple(x.shape)))
    return x


y = a.pow(2)
y.grad_fn._raw_saved_self.register_hooks(pack_hook, unpack_hook)
print(log)
y.sum().backward()
print(log)
print(a.grad)

log.clear()
a.grad = None
with torch.autograd.graph.saved_tensors_hooks(pack_hook, unpack_hook):
    w = torch.tensor([1.0, -1.0, 0.5, 2.0], requires_grad=True)
    z = (a * w).tanh().sum()
print(log)
z.backward()
print(sorted(log))
print(a.grad)
print(w.grad)


def scaled_pack(x):
    return x * 0.5


def scaled_unpack(x):
    return x * 2


a.grad = None
with torch.autograd.graph.saved_tensors_hooks(scaled_pack, scaled_unpack):
    loss = (a * a * a).sum()
loss.backward()
print(a.grad)

a.grad = None
with torch.autograd.graph.save_on_cpu(pin_memory=False):
    loss = (a.sin() * a.cos()).sum()
loss.backward()
print(a.grad)

try:
    y = a.exp()
    y.sum().backward()
    print(y.grad_fn._saved_result)
except RuntimeError as error:
    print("RuntimeError:", str(error)[:60])
