# Follows "Training a Classifier" (the 60-minute blitz, CIFAR-10):
# https://pytorch.org/tutorials/beginner/blitz/cifar10_tutorial.html
# A small CNN (conv, ReLU, max pool, conv, flatten, linear layers) as an nn.Module subclass,
# cross-entropy loss, SGD with momentum, a few training steps, then accuracy on held-out data.
# Weights and images come from linspace and sin (not the random stream), so values compare.
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 3 * 3, 20)
        self.fc2 = nn.Linear(20, 3)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


net = Net()
print(net)
with torch.no_grad():
    for i, p in enumerate(net.parameters()):
        sign = 1.0 if i % 2 == 0 else -1.0
        p.copy_(torch.linspace(-0.3, 0.3, p.numel()).reshape(p.shape) * sign)

images = torch.sin(torch.arange(12 * 3 * 14 * 14, dtype=torch.float32).reshape(12, 3, 14, 14) * 0.37)
labels = torch.tensor([0, 1, 2] * 4)
images[labels == 0, 0] += 1.0
images[labels == 1, 1] += 1.0
images[labels == 2, 2] += 1.0

criterion = nn.CrossEntropyLoss()
optimizer = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
print([name for name, _ in net.named_parameters()])
print(sum(p.numel() for p in net.parameters()))

for epoch in range(6):
    running_loss = 0.0
    for start in range(0, 12, 4):
        inputs, targets = images[start:start + 4], labels[start:start + 4]
        optimizer.zero_grad()
        outputs = net(inputs)
        loss = criterion(outputs, targets)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
    print(f"[{epoch + 1}] loss: {running_loss / 3:.4f}")

out = net.conv1(images[:2])
print(tuple(out.shape), out.grad_fn.name())
print(net.pool(out).grad_fn.name())
print(tuple(net.conv1.weight.grad.shape), net.conv1.bias.grad)

with torch.no_grad():
    outputs = net(images)
    _, predicted = torch.max(outputs, 1)
print(predicted)
print(f"accuracy: {100 * (predicted == labels).sum().item() // 12} %")
