#!/bin/bash
# The GPU verification of the CUDA engine, run on an accelerator machine
# from the files bench/gpu/prepare.sh put in .gpu/. Stages (arguments; all
# of them when none is given):
#   kernels   the device kernel suite (GEMM and every kernel) on the GPU
#             against the CPU reference;
#   epoch     one LeNet-300-100 epoch on MNIST with the flagship compression
#             policies on the GPU and on the CPU, test accuracy within 0.2 pp;
#   run       a compressed recipe (teacher, KD, AGP, gradual QAT, shifts)
#             run through run.Execute on the GPU and on the CPU, LeNet-5 too,
#             and a GPU run interrupted and resumed (resume: that alone);
#   flagship  recipes/mnist-lenet300-kd-prune-qat.hcl in full through
#             `coordinator --device cuda`;
#   lenet5    recipes/mnist-lenet5.hcl in full, likewise;
#   hetero    a CPU and a CUDA worker sharing the flagship recipe (one epoch
#             each of teacher and student), beside two CPU workers;
#   bench     training samples/s at batch 1024, lathe beside PyTorch on the
#             same GPU, alternating A B A B (bench5: the same for LeNet-5);
#   resnet    the device ResNet tests (ResNet steps on the GPU against the
#             host device; strict device, gradients, the CPU
#             graph's step) and ResNet-20 training samples/s at batch 128,
#             lathe beside PyTorch, A B A B;
#   r20       recipes/fashion-resnet20.hcl in full through `coordinator
#             --device cuda` (Fashion-MNIST: prepare.sh with FASHION=1;
#             R20_SEED picks the seed, 1 by default; R20_EPOCHS shortens it);
#   r20c      recipes/fashion-resnet20-compressed.hcl in full on the GPU,
#             distilled from r20's model (run r20 first, in the same call);
#   kd        bench/kd-tuned.sh on the GPU: the flagship distilled from a
#             100-epoch teacher against the recipe without KD tuned on the
#             validation split, 5 seeds (not in the default set).
# Everything runs with REQUIRE_GPU=1, so a missing GPU fails instead of
# skipping. Output goes to stdout and, when OUT is set, to $OUT/gpu-check.log
# (and the flagship's summary.json and metrics.csv to $OUT).
set -u -o pipefail
stages=${*:-kernels epoch run flagship lenet5 bench bench5}
cd "$(dirname "$0")/../../.gpu" || exit 1
out=${OUT:-/tmp}
exec > >(tee "$out/gpu-check.log") 2>&1
export REQUIRE_GPU=1 OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
untar() { python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$@"; } # no xz needed there
mkdir -p /tmp/lathe-ob /tmp/lathe-bin /tmp/lathe-fashion && untar openblas.txz /tmp/lathe-ob && untar bin.txz /tmp/lathe-bin
if [ -e fashion.txz ]; then
  untar fashion.txz /tmp/lathe-fashion && python3 -c 'import gzip, shutil, sys
for f in sys.argv[1:]:
    with open(f, "rb") as i, gzip.open(f + ".gz", "wb", compresslevel=1) as o: shutil.copyfileobj(i, o)' /tmp/lathe-fashion/*ubyte
fi
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
  resume)
    (cd ../run && $B/run.test -test.run 'TestCUDARunResumesBitIdentical' -test.v -test.count=1 2>&1 | grep -v '^=== RUN' | grep -v INFO) || rc=1 ;;
  lenet5)
    (cd .. && time $B/coordinator --recipe recipes/mnist-lenet5.hcl --device cuda --run-dir /tmp/lathe-lenet5 \
      --no-progress 2>&1 | grep -E 'epoch=(1|6|12) |job done|rror') || rc=1 ;;
  flagship)
    (cd .. && time $B/coordinator --recipe recipes/mnist-lenet300-kd-prune-qat.hcl --device cuda --run-dir /tmp/lathe-flagship \
      --no-progress 2>&1 | grep -E 'epoch=(1|10|20|30) |job done|teacher trained|rror') || rc=1
    cp /tmp/lathe-flagship/summary.json "$out/flagship-summary.json" 2>/dev/null
    cp /tmp/lathe-flagship/metrics.csv "$out/flagship-metrics.csv" 2>/dev/null ;;
  hetero)
    # One CPU and one CUDA worker share the flagship recipe (shortened),
    # then two CPU workers for comparison.
    for devs in cpu,cuda cpu,cpu; do
      echo "-- local workers: $devs"
      (cd .. && time timeout 150 $B/coordinator --recipe recipes/mnist-lenet300-kd-prune-qat.hcl -var epochs=1 -var teacher_epochs=1 \
        --workers 2 --worker-devices $devs --run-dir /tmp/lathe-hetero-${devs/,/-} --no-progress 2>&1 | grep -E 're-split|job done|rror|drift') || rc=1
      python3 -c "import json,sys; s=json.load(open(sys.argv[1])); c=s['cluster']; print('test', s['test_accuracy'], 'teacher', s.get('teacher_test_accuracy'), 'wall', round(s['wall_seconds'],1), {k: c.get(k) for k in ['workers','rebalances','shares','digests_compared','digest_mismatches','workers_quarantined']})" /tmp/lathe-hetero-${devs/,/-}/summary.json
      cp /tmp/lathe-hetero-${devs/,/-}/summary.json "$out/hetero-${devs/,/-}.json" 2>/dev/null
    done ;;
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
  resnet)
    $B/trainer.test -test.run 'CUDAResNet|DeviceResNet|DeviceMobileNet|DevicePooling|DeviceDepthwise' -test.v -test.count=1 2>&1 | grep -E -- '^(---|ok|FAIL|PASS)' || rc=1
    for round in 1 2; do
      $B/trainer.test -test.run XXX -test.bench 'DeviceStepCUDAResNet20$' -test.benchtime 300x 2>&1 | grep -E 'Benchmark|FAIL|rror'
      python3 ../bench/gpu/torch_mlp.py resnet20
    done ;;
  r20)
    (cd .. && time $B/coordinator --recipe recipes/fashion-resnet20.hcl -var seed=${R20_SEED:-1} -var epochs=${R20_EPOCHS:-30} --device cuda --data-dir /tmp/lathe-fashion \
      --run-dir /tmp/lathe-r20 --no-progress 2>&1 | grep -E 'epoch=(1|10|20|30) |job done|rror') || rc=1
    cp /tmp/lathe-r20/summary.json "$out/r20-summary.json" 2>/dev/null
    cp /tmp/lathe-r20/metrics.csv "$out/r20-metrics.csv" 2>/dev/null ;;
  r20c)
    (cd .. && time $B/coordinator --recipe recipes/fashion-resnet20-compressed.hcl -var seed=${R20_SEED:-1} -var epochs=${R20_EPOCHS:-30} \
      -var teacher=/tmp/lathe-r20/model.arrow --device cuda --data-dir /tmp/lathe-fashion \
      --run-dir /tmp/lathe-r20c --no-progress 2>&1 | grep -E 'epoch=(1|10|20|30) |job done|rror') || rc=1
    cp /tmp/lathe-r20c/summary.json "$out/r20c-summary.json" 2>/dev/null
    cp /tmp/lathe-r20c/metrics.csv "$out/r20c-metrics.csv" 2>/dev/null ;;
  kd)
    # Distillation against a no-KD baseline tuned on the validation split,
    # paired over 5 seeds, every run on the GPU (bench/kd-tuned.sh).
    (cd .. && COORD=$B/coordinator OUT=/tmp/lathe-kd bash bench/kd-tuned.sh --device cuda) || rc=1
    mkdir -p "$out/kd" && cp /tmp/lathe-kd/kd-tuned.txt "$out/kd/"
    (cd /tmp/lathe-kd && tar czf "$out/kd/runs.tgz" ./*.hcl ./*/summary.json ./tune-*/sweep.csv ./tune-*/sweep/*/summary.json) ;;
  *) echo "unknown stage $stage"; rc=1 ;;
  esac
done
exit $rc
