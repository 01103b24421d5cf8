#!/usr/bin/env python3
"""Makes the ONNX import fixtures with Debian's PyTorch (python3-torch, python3-onnx).

Every fixture is a small PyTorch module with seeded random weights (batch norms given random
running statistics), put in eval mode and exported by torch.onnx.export with its
BatchNormalization nodes kept (training=TrainingMode.PRESERVE), input "input", output "logits",
a dynamic batch, at opsets 13 and 17; beside it NAME.x.f32 holds 4 seeded random inputs
(float32, little-endian, [4, C, H, W]) for the tests, which compare lathe's runtime on the
imported model with onnxruntime on this file. Fixtures named bad_* use something lathe cannot
express; the importer must refuse them naming the node.

    /usr/bin/python3 onnx/testdata/make_fixtures.py [OUTDIR [NAME ...]]
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))


def randomize(m, seed):
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, nn.LayerNorm):
            mod.weight.data.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(mod.bias.shape, generator=g) * 0.2)
        if isinstance(mod, nn.MultiheadAttention):  # PyTorch starts these biases at zero
            mod.in_proj_bias.data.copy_(torch.randn(mod.in_proj_bias.shape, generator=g) * 0.2)
            mod.out_proj.bias.data.copy_(torch.randn(mod.out_proj.bias.shape, generator=g) * 0.2)
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = mod.num_features
            mod.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
            mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(c, generator=g) * 0.2)
    return m.eval()


class ConvBN(nn.Module):
    """Conv (bias, stride 2, padding 1) → BatchNorm → ReLU → grouped conv (no bias) → BatchNorm
    (epsilon 1e-3) → ReLU6 → MaxPool → AveragePool (padding, counted) → GlobalAveragePool →
    Flatten → Gemm."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, 2, 1)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 12, 3, 1, 1, groups=4, bias=False)
        self.b2 = nn.BatchNorm2d(12, eps=1e-3)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = F.relu6(self.b2(self.c2(x)))
        x = F.max_pool2d(x, 2)
        x = F.avg_pool2d(x, 3, 1, 1)
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


class Residual(nn.Module):
    """A residual block with a depthwise convolution and a strided 1×1 shortcut; ReduceMean over
    the image (x.mean((2, 3))) as the pooling."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 8, 3, 1, 1, bias=False)
        self.bs = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, 2, 1, groups=8, bias=False)
        self.b1 = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 16, 1, bias=False)
        self.b2 = nn.BatchNorm2d(16)
        self.sc = nn.Conv2d(8, 16, 1, 2, bias=False)
        self.b3 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = F.relu(self.bs(self.stem(x)))
        y = self.b2(self.pw(F.relu(self.b1(self.dw(x)))))
        x = F.relu(y + self.b3(self.sc(x)))
        return self.fc(x.mean((2, 3)))


class LeNetFlatten(nn.Module):
    """Conv → MaxPool → ReLU (the activation after the pooling) → flatten of a 4×4×6 image (its
    order is NCHW, lathe's NHWC) → Linear → ReLU → MatMul + Add (a parameter, not nn.Linear)."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 6, 5)
        self.fc = nn.Linear(6 * 4 * 4, 20)
        self.w = nn.Parameter(torch.randn(20, 7) * 0.2)
        self.b = nn.Parameter(torch.randn(7) * 0.1)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.c(x), 2))
        x = F.relu(self.fc(torch.flatten(x, 1)))
        return x @ self.w + self.b


class ViewFlatten(nn.Module):
    """x.view(x.size(0), -1) (Shape, Gather, Unsqueeze, Concat, Reshape) and a Linear on an image
    input with a BatchNorm1d after it."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3, 1, 1)
        self.fc = nn.Linear(4 * 6 * 6, 9)
        self.bn = nn.BatchNorm1d(9)
        self.out = nn.Linear(9, 3)

    def forward(self, x):
        x = F.relu(self.c(x))
        x = x.view(x.size(0), -1)
        return self.out(F.relu(self.bn(self.fc(x))))


class MnistCNN(nn.Module):
    """A small CNN for MNIST's shape (1×28×28, 10 classes), random weights: the recipe tests
    fine-tune it (model.file) and distil from it (teacher.file)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, 2, 1, bias=False)
        self.b1 = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 8, 3, 2, 1, bias=False)
        self.b2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = F.relu(self.b2(self.c2(x)))
        return self.fc(x.mean((2, 3)))


class Transformer(nn.Module):
    """A byte transformer as lathe's langid and kjv models are (graph.Transformer): token embedding
    plus learned positions (Gather, Add), pre-norm blocks of multi-head self-attention written
    out as PyTorch's nn.MultiheadAttention computes it (Linear q, k, v; view and transpose to heads;
    MatMul, scale, an additive causal mask for a language model, Softmax, MatMul, back, Linear o),
    a GELU feed-forward layer (its exact Erf form), a final LayerNorm, then the mean over the
    positions and a linear head (a classifier), or a head at every position (a language model).
    Input: byte ids, int64 [batch, T]."""

    def __init__(self, t=16, d=32, heads=4, blocks=2, mlp=64, classes=9, lm=False):
        super().__init__()
        self.t, self.heads, self.lm = t, heads, lm
        self.tok = nn.Embedding(256, d)
        self.pos = nn.Parameter(torch.randn(t, d) * 0.3)
        self.blocks = nn.ModuleList()
        for _ in range(blocks):
            b = nn.Module()
            b.ln1, b.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            b.q, b.k, b.v, b.o = (nn.Linear(d, d) for _ in range(4))
            b.fc1, b.fc2 = nn.Linear(d, mlp), nn.Linear(mlp, d)
            self.blocks.append(b)
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, 256 if lm else classes)
        self.register_buffer("mask", torch.triu(torch.full((t, t), float("-inf")), 1))

    def attend(self, b, h):
        n, t, d = h.shape
        dh = d // self.heads
        q = b.q(h).view(n, t, self.heads, dh).transpose(1, 2)
        k = b.k(h).view(n, t, self.heads, dh).transpose(1, 2)
        v = b.v(h).view(n, t, self.heads, dh).transpose(1, 2)
        s = q @ k.transpose(-2, -1) / math.sqrt(dh)
        if self.lm:
            s = s + self.mask
        c = (F.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(n, t, d)
        return b.o(c)

    def forward(self, ids):
        x = self.tok(ids) + self.pos
        for b in self.blocks:
            x = x + self.attend(b, b.ln1(x))
            x = x + b.fc2(F.gelu(b.fc1(b.ln2(x))))
        x = self.ln(x)
        return self.head(x) if self.lm else self.head(x.mean(1))


class TorchEncoder(nn.Module):
    """A byte transformer built of PyTorch's own nn.TransformerEncoderLayer (so its attention is
    nn.MultiheadAttention's export: one packed in_proj, q, k and v sliced from it, the heads
    folded into a time-major batch [T, batch·H, dh], out_proj). lm=False: batch_first, pre-norm,
    GELU, two layers, the mean over the positions and a classifier head. lm=True: time-major
    (batch_first=False, the default: the model transposes), post-norm, ReLU, a causal mask, a
    head at every position. Input: byte ids, int64 [batch, T]."""

    def __init__(self, t=16, d=32, heads=4, blocks=2, mlp=64, classes=9, lm=False):
        super().__init__()
        self.lm = lm
        self.tok = nn.Embedding(256, d)
        self.pos = nn.Parameter(torch.randn(t, d) * 0.3)
        layer = nn.TransformerEncoderLayer(d, heads, mlp, dropout=0.0, activation="relu" if lm else "gelu",
                                           batch_first=not lm, norm_first=not lm)
        self.enc = nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, 256 if lm else classes)
        self.register_buffer("mask", torch.triu(torch.full((t, t), float("-inf")), 1))

    def forward(self, ids):
        x = self.tok(ids) + self.pos
        if self.lm:
            x = self.enc(x.transpose(0, 1), mask=self.mask).transpose(0, 1)
            return self.head(x)
        return self.head(self.ln(self.enc(x)).mean(1))


class Normalized(nn.Module):
    """The input normalized inside forward, as torchvision's Normalize does outside it:
    (x − mean) / std per channel, then a padded convolution (its border sees the normalized zeros)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.c = nn.Conv2d(3, 6, 3, 1, 1)
        self.b = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        x = (x - self.mean) / self.std
        return self.fc(F.relu(self.b(self.c(x))).mean((2, 3)))


class SigmoidOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return torch.sigmoid(self.fc(torch.flatten(x, 1)))


class SiLUNet(nn.Module):
    """SiLU (exported as Sigmoid and Mul) after a batch norm and a linear
    layer, a sigmoid after a convolution."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 6, 3, 1, 1)
        self.b1 = nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 6, 3, 2, 1)
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        x = F.silu(self.b1(self.c1(x)))
        x = torch.sigmoid(self.c2(x))
        x = F.silu(self.fc1(x.mean((2, 3))))
        return self.fc2(x)


class SoftmaxOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return F.softmax(self.fc(torch.flatten(x, 1)), dim=1)


class BadTanh(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return torch.tanh(self.fc(torch.flatten(x, 1)))


class BadSlice(nn.Module):
    """Keeps the first two of a convolution's channels: a Slice lathe cannot express."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.c(x)[:, :2], 1))


class BadTimeMajor(nn.Module):
    """A time-major encoder (batch_first=False) whose per-position head reads [T, batch, D]: its
    output is [T, batch, classes], not lathe's [batch, T, classes]."""

    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(256, 8)
        self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)
        self.head = nn.Linear(8, 4)

    def forward(self, ids):
        return self.head(self.enc(self.tok(ids).transpose(0, 1)))


class BadDilation(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 2, 3, dilation=2)
        self.fc = nn.Linear(2 * 2 * 2, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.c(x), 1))


FIXTURES = [
    ("conv_bn", ConvBN, (3, 16, 16)),
    ("residual", Residual, (2, 8, 8)),
    ("lenet_flatten", LeNetFlatten, (1, 12, 12)),
    ("view_flatten", ViewFlatten, (1, 6, 6)),
    ("mnist_cnn", MnistCNN, (1, 28, 28)),
    ("transformer", Transformer, (16,)),
    ("charlm", lambda: Transformer(t=12, d=16, heads=2, blocks=1, mlp=32, lm=True), (12,)),
    ("normalized", Normalized, (3, 8, 8)),
    ("sigmoid_out", SigmoidOut, (1, 4, 4)),
    ("bad_dilation", BadDilation, (1, 6, 6)),
    ("softmax_out", SoftmaxOut, (1, 4, 4)),
    ("silu", SiLUNet, (2, 8, 8)),
    ("bad_tanh", BadTanh, (1, 4, 4)),
    ("torch_encoder", TorchEncoder, (16,)),
    ("bad_slice", BadSlice, (1, 6, 6)),
    ("bad_time_major", BadTimeMajor, (6,)),
    ("torch_lm", lambda: TorchEncoder(t=12, d=16, heads=2, blocks=1, mlp=32, lm=True), (12,)),
]


def export(m, path, shape, opset):
    x = torch.zeros(2, *shape, dtype=torch.int64) if len(shape) == 1 else torch.zeros(2, *shape)
    torch.onnx.export(m, x, path, input_names=["input"], output_names=["logits"], opset_version=opset,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=True)


def main():
    only = set(sys.argv[2:])  # fixture names to make (default: all)
    for i, (name, cls, shape) in enumerate(FIXTURES):
        if only and name not in only:
            continue
        torch.manual_seed(100 + i)
        m = randomize(cls(), 200 + i)
        for opset in (13, 17):
            export(m, os.path.join(OUT, f"{name}.op{opset}.onnx"), shape, opset)
        g = torch.Generator().manual_seed(300 + i)
        x = torch.rand(4, *shape, generator=g)
        if len(shape) == 1:  # byte ids, stored as id/255 (the ids lathe's runtime and run.mjs take)
            x = torch.randint(1, 256, (4, *shape), generator=g).float() / 255
        with open(os.path.join(OUT, f"{name}.x.f32"), "wb") as f:
            f.write(x.numpy().astype("<f4").tobytes())
        print(name, "params", sum(p.numel() for p in m.parameters()))


if __name__ == "__main__":
    main()
