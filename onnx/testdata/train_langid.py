#!/usr/bin/env python3
"""Trains the import target's language identifier with Debian's PyTorch and exports it: the
byte transformer of make_fixtures.py (embedding of width 64 with learned positions, two pre-norm
blocks of 4-head attention and a GELU feed-forward layer of 128, mean over the positions, a
linear head) on lathe's langid windows (64 bytes of fortune cookies in nine languages), dumped by
`go run ./bench/dataset-dump -dataset langid -o DIR` so that PyTorch sees exactly lathe's samples;
1 epoch of AdamW (lr 2e-3, batch 128, seed 1) over the whole training set; exported at opset 17 as langid_transformer.onnx
(input "input": byte ids int64 [batch, 64], output "logits" [batch, 9]). With --torch-layers the
blocks are PyTorch's own nn.TransformerEncoderLayer (make_fixtures.py's TorchEncoder, the same
widths; nn.MultiheadAttention's export).

    /usr/bin/python3 onnx/testdata/train_langid.py DUMP_DIR [OUT.onnx] [--torch-layers]
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import TorchEncoder, Transformer, export  # noqa: E402

TORCH_LAYERS = "--torch-layers" in sys.argv
ARGS = [a for a in sys.argv[1:] if a != "--torch-layers"]
DUMP = ARGS[0]
OUT = ARGS[1] if len(ARGS) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "langid_transformer.onnx")


def load(split, cols):
    x = np.fromfile(os.path.join(DUMP, split + ".x"), np.uint8).reshape(-1, cols)
    y = np.fromfile(os.path.join(DUMP, split + ".y"), np.uint8)
    return torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))


def main():
    meta = json.load(open(os.path.join(DUMP, "meta.json")))
    t, classes = meta["cols"], meta["classes"]
    torch.manual_seed(1)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    xs, ys = load("train", t)
    xt, yt = load("test", t)
    arch = TorchEncoder if TORCH_LAYERS else Transformer
    m = arch(t=t, d=64, heads=4, blocks=2, mlp=128, classes=classes)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3, weight_decay=0.01)
    for epoch in range(1):
        m.train()
        perm = torch.randperm(len(xs))
        for step, k in enumerate(range(0, len(xs), 128)):
            b = perm[k:k + 128]
            opt.zero_grad()
            loss = F.cross_entropy(m(xs[b]), ys[b])
            loss.backward()
            opt.step()
            if step % 100 == 0:
                print(f"epoch {epoch + 1} step {step}: loss {loss.item():.3f}", flush=True)
        m.eval()
        with torch.no_grad():
            right = sum((m(xt[k:k + 1000]).argmax(1) == yt[k:k + 1000]).sum().item() for k in range(0, len(xt), 1000))
        print(f"epoch {epoch + 1}: test accuracy {100 * right / len(xt):.2f} %", flush=True)
    export(m, OUT, (t,), 17)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
