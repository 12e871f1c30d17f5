# Follows the torch.accelerator API page (PyTorch docs):
# https://pytorch.org/docs/stable/accelerator.html
# Device-generic code: pick the accelerator when there is one, else the CPU, and run there.
import torch

print(torch.accelerator.is_available())
print(torch.accelerator.device_count())
accelerator = torch.accelerator.current_accelerator()
device = accelerator if torch.accelerator.is_available() else torch.device("cpu")
print(device.type if accelerator is None else "accelerator")
x = torch.linspace(0.0, 1.0, 5, device=device, requires_grad=True)
(x * x).sum().backward()
print(x.grad.cpu())
