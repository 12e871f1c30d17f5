# Follows "Variable (deprecated)" in the torch.autograd page (PyTorch docs):
# https://pytorch.org/docs/stable/autograd.html#variable-deprecated
# Old code wrapping tensors in Variable still runs: Variable(tensor) is a Tensor, requires_grad
# as asked, and every Tensor is a Variable.
import torch
from torch.autograd import Variable

data = torch.tensor([1.0, 2.0, 3.0])
v = Variable(data, requires_grad=True)
print(type(v).__name__, v.requires_grad, v.is_leaf, v is data, data.requires_grad)
loss = (v * v).sum()
loss.backward()
print(v.grad)
print(isinstance(data, Variable), isinstance(loss, Variable))
plain = Variable(data)
print(plain.requires_grad)
try:
    Variable([1.0, 2.0])
except TypeError as error:
    print("TypeError:", error)
