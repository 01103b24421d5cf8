"""PyTorch anchor for lathe's GPU training steps (bench/gpu/check.sh).

The same step as trainer's BenchmarkDeviceStep*: an MLP with ReLU, batch
1024 gathered from a resident random set of 8192 samples in the same order,
cross-entropy, backward, SGD with momentum 0.9 and weight decay 1e-4,
float32 (TF32 off, PyTorch's default for matrix products; cuDNN picks its
convolution algorithms as it does by default). Prints one JSON
line per measurement: samples/s over `steps` steps after 10 warm-up steps.
"""
import json
import sys
import time

import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def lenet5():
    return torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, 28, 28)),
        torch.nn.Conv2d(1, 20, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(20, 50, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(800, 500), torch.nn.ReLU(), torch.nn.Linear(500, 10))


class Block(torch.nn.Module):
    """The basic block of the PyTorch anchor's ResNet (torch_anchor.py)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        nn = torch.nn
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.sc = None
        if stride != 1 or cin != cout:
            self.sc = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
        return torch.relu(y + (x if self.sc is None else self.sc(x)))


def resnet(n):
    """ResNet-(6n+2) for 28x28x1 inputs, the anchor's definition."""
    nn = torch.nn
    blocks, cin = [], 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(n):
            blocks.append(Block(cin, cout, stride if i == 0 else 1))
            cin = cout
    return nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def bench(name, sizes, steps, batch=1024, n=8192):
    dev = "cuda"
    torch.manual_seed(1)
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    if name == "lenet5":
        model = lenet5()
    elif name == "resnet20":
        model = resnet(3)
    else:
        model = torch.nn.Sequential(*layers)
    model = model.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x_all = torch.rand(n, sizes[0], device=dev)
    y_all = torch.randint(0, sizes[-1], (n,), device=dev)
    idx = (torch.arange(n, device=dev) * 7919) % n
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(i):
        s = i % (n // batch)
        ix = idx[s * batch:(s + 1) * batch]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x_all[ix]), y_all[ix])
        loss.backward()
        opt.step()

    for i in range(10):
        step(i)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(steps):
        step(i)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    print(json.dumps({"model": name, "batch": batch, "steps": steps, "samples_per_s": steps * batch / dt,
                      "device": torch.cuda.get_device_name(0), "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "lenet300,wide"
    if "lenet300" in which:
        bench("lenet300", [784, 300, 100, 10], 500)
    if "wide" in which:
        bench("wide", [784, 4096, 4096, 10], 100)
    if "lenet5" in which:
        bench("lenet5", [784, 10], 200)
    if "resnet20" in which:
        bench("resnet20", [784, 10], 300, batch=128)
