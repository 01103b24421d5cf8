#!/bin/bash
# The GPU verification of the CUDA engine, run on an accelerator machine
# from the files bench/gpu/prepare.sh put in .gpu/. Stages (arguments; all
# of them when none is given):
#   kernels   the device kernel suite (GEMM and every kernel) on the GPU
#             against the CPU reference;
#   epoch     one LeNet-300-100 epoch on MNIST with the flagship compression
#             policies on the GPU and on the CPU, test accuracy within 0.2 pp;
#   run       a compressed recipe (teacher, KD, AGP, gradual QAT, shifts)
#             run through run.Execute on the GPU and on the CPU;
#   flagship  recipes/mnist-lenet300-kd-prune-qat.hcl in full through
#             `coordinator --device cuda`;
#   lenet5    recipes/mnist-lenet5.hcl in full, likewise;
#   bench     training samples/s at batch 1024, lathe beside PyTorch on the
#             same GPU, alternating A B A B (bench5: the same for LeNet-5).
# Everything runs with REQUIRE_GPU=1, so a missing GPU fails instead of
# skipping. Output goes to stdout and, when OUT is set, to $OUT/gpu-check.log
# (and the flagship's summary.json and metrics.csv to $OUT).
set -u -o pipefail
stages=${*:-kernels epoch run flagship lenet5 bench bench5}
cd "$(dirname "$0")/../../.gpu" || exit 1
out=${OUT:-/tmp}
exec > >(tee "$out/gpu-check.log") 2>&1
export REQUIRE_GPU=1 OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
mkdir -p /tmp/lathe-ob /tmp/lathe-bin && tar xzf openblas.tgz -C /tmp/lathe-ob && tar xzf bin.tgz -C /tmp/lathe-bin
export LD_LIBRARY_PATH=/tmp/lathe-ob${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export GOMODCACHE=$PWD/modcache
libs=$(find /usr/local /usr/lib /opt -name 'libcublas.so.1[23]' -o -name 'libnvrtc.so.1[23]' 2>/dev/null | xargs -r -n1 dirname | sort -u | paste -sd:)
export LATHE_CUDA_LIBRARY_PATH=$libs
export LD_LIBRARY_PATH=$libs:$LD_LIBRARY_PATH
B=/tmp/lathe-bin
echo "== device"; nvidia-smi -L; echo "cuda libraries: $libs"
rc=0
for stage in $stages; do
  echo "== $stage"
  case $stage in
  kernels)
    nvcc -arch=sm_90 -cubin -o /tmp/lathe-k.cubin ../compute/cuda/kernels.cu && echo "nvcc compiles kernels.cu"
    $B/cuda.test -test.v -test.count=1 2>&1 | grep -v '^=== RUN' | grep -v '^    --- PASS' | tail -40 || rc=1 ;;
  epoch)
    $B/trainer.test -test.run 'TestCUDAEpochMatchesCPU|TestStrictDeviceTrainingStep' -test.v -test.count=1 2>&1 | grep -v '^=== RUN' || rc=1 ;;
  run)
    (cd ../run && $B/run.test -test.run 'TestCUDARun' -test.v -test.count=1 2>&1 | grep -v '^=== RUN' | grep -v INFO) || rc=1 ;;
  lenet5)
    (cd .. && time $B/coordinator --recipe recipes/mnist-lenet5.hcl --device cuda --run-dir /tmp/lathe-lenet5 \
      --no-progress 2>&1 | grep -E 'epoch=(1|6|12) |job done|rror') || rc=1 ;;
  flagship)
    (cd .. && time $B/coordinator --recipe recipes/mnist-lenet300-kd-prune-qat.hcl --device cuda --run-dir /tmp/lathe-flagship \
      --no-progress 2>&1 | grep -E 'epoch=(1|10|20|30) |job done|teacher trained|rror') || rc=1
    cp /tmp/lathe-flagship/summary.json "$out/flagship-summary.json" 2>/dev/null
    cp /tmp/lathe-flagship/metrics.csv "$out/flagship-metrics.csv" 2>/dev/null ;;
  bench)
    for round in 1 2; do
      $B/trainer.test -test.run XXX -test.bench 'DeviceStepCUDALeNet300$' -test.benchtime 500x 2>&1 | grep -E 'Benchmark|FAIL|rror'
      python3 ../bench/gpu/torch_mlp.py lenet300
      $B/trainer.test -test.run XXX -test.bench 'DeviceStepCUDAWide$' -test.benchtime 100x 2>&1 | grep -E 'Benchmark|FAIL|rror'
      python3 ../bench/gpu/torch_mlp.py wide
    done
    $B/trainer.test -test.run XXX -test.bench 'DeviceStepCUDALeNet300Compressed$' -test.benchtime 500x 2>&1 | grep -E 'Benchmark|FAIL|rror' ;;
  bench5)
    for round in 1 2; do
      $B/trainer.test -test.run XXX -test.bench 'DeviceStepCUDALeNet5$' -test.benchtime 200x 2>&1 | grep -E 'Benchmark|FAIL|rror'
      python3 ../bench/gpu/torch_mlp.py lenet5
    done ;;
  *) echo "unknown stage $stage"; rc=1 ;;
  esac
done
exit $rc
