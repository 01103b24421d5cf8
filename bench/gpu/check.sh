#!/bin/bash
# The GPU verification of issue 7, run on an accelerator machine from the
# files bench/gpu/prepare.sh put in .gpu/ (test binaries built with
# CGO_ENABLED=0, OpenBLAS for the CPU reference, the MNIST IDX files):
#   1. the device kernel suite (GEMM and every kernel) on the GPU against
#      the CPU reference;
#   2. one LeNet-300-100 epoch on MNIST with the flagship compression
#      policies on the GPU and on the CPU, test accuracy within 0.2 pp;
#   3. training samples/s at batch 1024, lathe beside PyTorch on the same
#      GPU, alternating A B A B.
# Everything runs with REQUIRE_GPU=1, so a missing GPU fails instead of
# skipping. Output goes to stdout and, when OUT is set, to $OUT/gpu-check.log.
set -u -o pipefail
cd "$(dirname "$0")/../../.gpu" || exit 1
log=${OUT:-/tmp}/gpu-check.log
exec > >(tee "$log") 2>&1
export REQUIRE_GPU=1 OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
mkdir -p /tmp/lathe-ob && tar xzf openblas.tgz -C /tmp/lathe-ob
export LD_LIBRARY_PATH=/tmp/lathe-ob${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export GOMODCACHE=$PWD/modcache
libs=$(find /usr/local /usr/lib /opt -name 'libcublas.so.1[23]' -o -name 'libnvrtc.so.1[23]' 2>/dev/null | xargs -r -n1 dirname | sort -u | paste -sd:)
export LATHE_CUDA_LIBRARY_PATH=$libs
export LD_LIBRARY_PATH=$libs:$LD_LIBRARY_PATH
echo "== device"; nvidia-smi -L; echo "cuda libraries: $libs"
rc=0
echo "== 1. kernel suite"
nvcc -arch=sm_90 -cubin -o /tmp/lathe-k.cubin ../compute/cuda/kernels.cu && echo "nvcc compiles kernels.cu"
./cuda.test -test.v -test.count=1 2>&1 | grep -v '^=== RUN' | tail -40 || rc=1
echo "== 2. one LeNet-300-100 epoch, GPU vs CPU"
./trainer.test -test.run 'TestCUDAEpochMatchesCPU|TestStrictDeviceTrainingStep' -test.v -test.count=1 2>&1 | grep -v '^=== RUN' || rc=1
echo "== 3. samples/s, lathe (A) beside PyTorch (B)"
for round in 1 2; do
  ./trainer.test -test.run XXX -test.bench 'DeviceStepCUDALeNet300$' -test.benchtime 500x 2>&1 | grep -E 'Benchmark|FAIL|rror'
  python3 ../bench/gpu/torch_mlp.py lenet300
  ./trainer.test -test.run XXX -test.bench 'DeviceStepCUDAWide$' -test.benchtime 100x 2>&1 | grep -E 'Benchmark|FAIL|rror'
  python3 ../bench/gpu/torch_mlp.py wide
done
./trainer.test -test.run XXX -test.bench 'DeviceStepCUDALeNet300Compressed$' -test.benchtime 500x 2>&1 | grep -E 'Benchmark|FAIL|rror'
exit $rc
