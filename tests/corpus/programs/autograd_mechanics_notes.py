# Follows "Autograd mechanics" (PyTorch notes): saved tensors and backward hooks:
# https://pytorch.org/docs/stable/notes/autograd.html
# What a node saves and when it is the same object; hooks on tensors, on nodes before they run
# (register_prehook) and after (register_hook), their order, removal, and Node.metadata.
import torch

x = torch.tensor([0.5, 1.0, 2.0], requires_grad=True)
y = x.pow(2)
print(y.grad_fn.name(), y.grad_fn._saved_self is x)
z = x.exp()
print(z.grad_fn._saved_result.equal(z), z.grad_fn._saved_result is z)

events = []
a = torch.tensor([1.0, 2.0], requires_grad=True)
b = a * 2
c = b.sin()


def tensor_hook(grad):
    events.append(("tensor hook on b", grad.tolist()))


def node_prehook(grad_outputs):
    events.append(("prehook on SinBackward0", grad_outputs[0].tolist()))


def node_hook(grad_inputs, grad_outputs):
    events.append(("hook on MulBackward0", grad_inputs[0].tolist()))


b.register_hook(tensor_hook)
handle = c.grad_fn.register_prehook(node_prehook)
b.grad_fn.register_hook(node_hook)
c.sum().backward()
for event in events:
    print(event[0], [round(v, 4) for v in event[1] if v is not None])
print(a.grad)

handle.remove()
events.clear()
a.grad = None
c = (a * 2).sin()
c.grad_fn.register_prehook(lambda grad_outputs: (grad_outputs[0] * 10,))
c.sum().backward()
print(a.grad)

a.grad = None
b = a * 3
b.grad_fn.register_hook(lambda grad_inputs, grad_outputs: (grad_inputs[0] * 0, None))
b.sum().backward()
print(a.grad)

node = (a + 1).grad_fn
node.metadata["label"] = "shifted"
print(node.name(), node.metadata)
