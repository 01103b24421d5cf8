#!/usr/bin/env python3
"""Trains the import target's CNN with Debian's PyTorch and exports it: ResNet-8 (He et al.'s
CIFAR ResNet-(6n+2), n=1, shortcut option B — the definition of ../shared/bench/torch_anchor.py)
on Fashion-MNIST (Debian's dataset-fashion-mnist), inputs pixel/255, 3 epochs of Adam (lr 2e-3,
batch 128, seed 1), exported in eval mode with its BatchNormalization nodes kept
(training=TrainingMode.PRESERVE) at opset 17 as fashion_resnet8.onnx (input "input" [batch, 1,
28, 28], output "logits" [batch, 10]).

    /usr/bin/python3 onnx/testdata/train_resnet.py [OUT.onnx]
"""
import gzip
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DIR = "/usr/share/datasets/fashion-mnist"
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "fashion_resnet8.onnx")


def idx(name):
    with gzip.open(os.path.join(DIR, name)) as f:
        b = f.read()
    if b[2] == 8 and b[3] == 3:
        n, r, c = (int.from_bytes(b[4 + 4 * k:8 + 4 * k], "big") for k in range(3))
        return np.frombuffer(b, np.uint8, offset=16).reshape(n, 1, r, c)
    return np.frombuffer(b, np.uint8, offset=8)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.sc = None
        if stride != 1 or cin != cout:
            self.sc = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        return F.relu(y + (x if self.sc is None else self.sc(x)))


class ResNet(nn.Module):
    def __init__(self, n=1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def main():
    torch.manual_seed(1)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    xs = torch.from_numpy(idx("train-images-idx3-ubyte.gz").astype(np.float32) / 255)
    ys = torch.from_numpy(idx("train-labels-idx1-ubyte.gz").astype(np.int64))
    xt = torch.from_numpy(idx("t10k-images-idx3-ubyte.gz").astype(np.float32) / 255)
    yt = torch.from_numpy(idx("t10k-labels-idx1-ubyte.gz").astype(np.int64))
    m = ResNet(1)
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    for epoch in range(3):
        m.train()
        perm = torch.randperm(len(xs))
        for k in range(0, len(xs), 128):
            b = perm[k:k + 128]
            opt.zero_grad()
            F.cross_entropy(m(xs[b]), ys[b]).backward()
            opt.step()
        m.eval()
        with torch.no_grad():
            acc = sum((m(xt[k:k + 1000]).argmax(1) == yt[k:k + 1000]).sum().item() for k in range(0, len(xt), 1000)) / len(xt)
        print(f"epoch {epoch + 1}: test accuracy {100 * acc:.2f} %", flush=True)
    torch.onnx.export(m, torch.zeros(2, 1, 28, 28), OUT, input_names=["input"], output_names=["logits"], opset_version=17,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=True)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
