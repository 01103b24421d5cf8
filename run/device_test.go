package run

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/compute/enginetest"
	"github.com/lathe-ml/lathe/compute/host"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/schedule"
	"github.com/lathe-ml/lathe/trainer"
)

// deviceRecipe uses everything the device path supports: augmentation, a
// teacher with dropout, distillation, global AGP pruning, gradual
// per-channel QAT, a cosine schedule with warm-up.
const deviceRecipe = `job "dev" {
  epochs     = 2
  batch      = 128
  validation = 50000
  augment {
    shift = 2
  }
  model {
    arch   = "mlp"
    hidden = [64, 32]
  }
  teacher {
    arch          = "mlp"
    hidden        = [128]
    dropout       = 0.3
    input_dropout = 0.1
    epochs        = 1
  }
  distill {
    temperature = 2
    alpha       = 0.5
  }
  optimizer "sgd" {
    lr            = 0.05
    momentum      = 0.9
    weight_decay  = 1e-4
    lr_schedule   = "cosine"
    warmup_epochs = 0.25
  }
  prune "magnitude" {
    layers       = ["fc1", "fc2", "fc3"]
    target       = 0.6
    scope        = "global"
    from_epoch   = 0
    to_epoch     = 1.5
    every_epochs = 0.25
  }
  quantize {
    layers         = ["fc1", "fc2", "fc3"]
    bits           = 8
    from_epoch     = 1
    gradual        = [6]
    gradual_epochs = [1.5]
    granularity    = "per_channel"
    symmetric      = true
  }
}
`

func runOnDevice(t *testing.T, dev compute.Device) (*rundir.Summary, *checkpoint.File, string) {
	t.Helper()
	j, err := recipes.Parse([]byte(deviceRecipe), "dev.hcl", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sum, err := Execute(context.Background(), j, Options{RunDir: dir, Device: dev})
	if err != nil {
		t.Fatal(err)
	}
	f, err := checkpoint.Read(filepath.Join(dir, rundir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	return sum, f, dir
}

// TestStrictDeviceRun runs a whole compressed recipe — teacher, then
// student — on the strict device (its memory faults when host code touches
// it) and on the reference device: the model files hold the same bits; the
// model file evaluated on the CPU gives the device's test accuracy; the
// run did what the recipe asked.
func TestStrictDeviceRun(t *testing.T) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	eng := cpu.New(cpu.Options{Threads: 2})
	strict, ref := host.NewStrict(eng), host.New(eng)
	defer strict.Close()
	defer ref.Close()
	ss, sf, dir := runOnDevice(t, strict)
	rs, rf, _ := runOnDevice(t, ref)
	if a, b := checkpoint.WeightsDigest(sf.Tensors), checkpoint.WeightsDigest(rf.Tensors); a != b || ss.TestAccuracy != rs.TestAccuracy {
		t.Fatalf("strict and reference devices differ: weights %s vs %s, test accuracy %v vs %v", a, b, ss.TestAccuracy, rs.TestAccuracy)
	}
	// 78 steps an epoch under pruning, warm-up and cosine decay: the CPU
	// path reaches 81 % (teacher 82 %) on this recipe too.
	if ss.TestAccuracy < 0.75 || ss.TeacherTestAccuracy < 0.75 {
		t.Fatalf("test accuracy %v (teacher %v) after 2 epochs on 10 000 images", ss.TestAccuracy, ss.TeacherTestAccuracy)
	}
	last := ss.History[len(ss.History)-1]
	if math.Abs(last.Sparsity-0.6) > 0.01 || last.WeightBits != 6 || last.DistillLoss <= 0 || last.DistillLoss >= last.TrainLoss {
		t.Fatalf("last epoch %+v", last)
	}
	for _, l := range ss.Layers {
		if l.Bits != 6 {
			t.Fatalf("layer %s has %d bits, want 6", l.Name, l.Bits)
		}
	}
	if ss.ModelRatio < 6 { // 6-bit codes, 60 % zeros, and the small model's fixed costs
		t.Fatalf("model file only %.1fx smaller than fp32", ss.ModelRatio)
	}
	m, _, err := rundir.LoadModel(sf)
	if err != nil {
		t.Fatal(err)
	}
	_, test, err := data.Load("mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	acc, _, err := trainer.EvaluateModel(m, eng, test, 1000)
	if err != nil {
		t.Fatal(err)
	}
	// The file's weights are the codes the device computed with; only the
	// order of GEMM sums differs between the device and the CPU graph.
	if math.Abs(acc-ss.TestAccuracy) > 0.001 {
		t.Fatalf("model file on the CPU: test accuracy %v, the device said %v", acc, ss.TestAccuracy)
	}
	for _, f := range []string{rundir.SummaryFile, rundir.MetricsFile, rundir.ManifestFile, rundir.RecipeFile, "teacher/" + rundir.SummaryFile, "teacher/" + rundir.ModelFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("the run left no %s: %v", f, err)
		}
	}
	// The same student distilled from that teacher's model file
	// (teacher.file): the same weights as with the teacher trained in the
	// run.
	withFile := regexp.MustCompile(`(?s)  teacher \{.*?\n  \}`).ReplaceAllString(deviceRecipe,
		fmt.Sprintf("  teacher {\n    file = %q\n  }", filepath.Join(dir, "teacher", rundir.ModelFile)))
	j, err := recipes.Parse([]byte(withFile), "dev.hcl", nil)
	if err != nil {
		t.Fatal(err)
	}
	fdir := t.TempDir()
	if _, err := Execute(context.Background(), j, Options{RunDir: fdir, Device: ref}); err != nil {
		t.Fatal(err)
	}
	if a, b := weightsDigest(t, filepath.Join(fdir, rundir.ModelFile)), checkpoint.WeightsDigest(rf.Tensors); a != b {
		t.Fatalf("distilled from the teacher's file %s, from the teacher trained in the run %s", a, b)
	}
}

// TestDeviceRefusesWhatItCannotDo names the recipe's position.
func TestDeviceRefusesWhatItCannotDo(t *testing.T) {
	dev := host.New(cpu.New(cpu.Options{Threads: 1}))
	defer dev.Close()
	for _, tc := range []struct{ block, want string }{
		{`regularize "group_lasso" {
    layers = ["fc1"]
    groups = "rows"
    strength = 1e-4
  }`, "tiny.hcl:14,3: regularization is not supported on the cpu device"},
		{`cluster {
    layers   = ["fc1"]
    clusters = 16
  }`, "tiny.hcl:14,3: weight clustering is not supported on the cpu device"},
		{`factorize {
    layer    = "fc1"
    rank     = 8
    at_epoch = 0
  }`, "tiny.hcl:14,3: low-rank factorization is not supported on the cpu device"},
	} {
		j, err := recipes.Parse([]byte(withBlock(tc.block)), "tiny.hcl", nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Execute(context.Background(), j, Options{RunDir: t.TempDir(), Device: dev})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: error %v, want %q", tc.block, err, tc.want)
		}
	}
	j, err := recipes.Parse([]byte(strings.Replace(recipe, "lr = var.lr", "lr = var.lr\n    clip_norm = 1", 1)), "tiny.hcl", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = Execute(context.Background(), j, Options{RunDir: t.TempDir(), Device: dev}); err == nil || !strings.Contains(err.Error(), "tiny.hcl:20,17: gradient clipping is not supported on the cpu device") {
		t.Fatalf("clip_norm on the device: %v", err)
	}
}

// TestCUDARun runs the same recipe on the GPU and on the CPU reference:
// test accuracy within 0.5 pp (2 epochs on 10 000 images). Skipped without
// a GPU; fails with REQUIRE_GPU=1.
func TestCUDARun(t *testing.T) {
	gpu := enginetest.CUDA(t)
	gs, gf, _ := runOnDevice(t, gpu)
	ref := host.New(cpu.New(cpu.Options{}))
	defer ref.Close()
	rs, _, _ := runOnDevice(t, ref)
	t.Logf("GPU: test accuracy %.4f, %.0f samples/s; CPU: %.4f, %.0f samples/s", gs.TestAccuracy, gs.SamplesPerSecond, rs.TestAccuracy, rs.SamplesPerSecond)
	if math.Abs(gs.TestAccuracy-rs.TestAccuracy) > 0.005 {
		t.Fatalf("GPU %v vs CPU %v", gs.TestAccuracy, rs.TestAccuracy)
	}
	if _, _, err := rundir.LoadModel(gf); err != nil {
		t.Fatal(err)
	}
}

// TestDeviceLeNet5MatchesTheModel trains LeNet-5 (convolutions,
// max-pooling, dropout) built from the model zoo on 4 000 images on the
// reference device, copies the weights back into the model, and checks
// that the CPU graph (lathe's own im2col convolution and NHWC flatten)
// computes the same test accuracy as the device: the layouts agree.
func TestDeviceLeNet5MatchesTheModel(t *testing.T) {
	m, err := model.New(model.Spec{Arch: "lenet5", Dropout: 0.3}, model.MNISTInput, 1)
	if err != nil {
		t.Fatal(err)
	}
	eng := cpu.New(cpu.Options{Threads: 2})
	dev := host.New(eng)
	defer dev.Close()
	train, test, err := data.Load("mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	test = test.Slice("test", 0, 2000)
	opt, err := trainer.NewOptimizer(trainer.OptimConfig{Kind: "sgd", Momentum: 0.9}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := trainer.New(trainer.Config{Model: m, Engine: eng, Device: dev, Train: train.Slice("train", 0, 4000), Batch: 64, Epochs: 1, Seed: 1,
		Optimizer: opt, Policies: []trainer.Policy{&trainer.LRPolicy{Schedule: schedule.LR{Kind: "constant", Base: 0.05}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if _, err := tr.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	devAcc, _, err := tr.Evaluate(test)
	if err != nil {
		t.Fatal(err)
	}
	cpuAcc, _, err := trainer.EvaluateModel(tr.Model(), eng, test, 1000)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("device %.4f, CPU graph %.4f", devAcc, cpuAcc)
	if devAcc < 0.85 || math.Abs(devAcc-cpuAcc) > 0.001 {
		t.Fatalf("test accuracy on the device %v, through the model on the CPU %v", devAcc, cpuAcc)
	}
}

// deviceLeNet5 is a short LeNet-5 recipe with per-layer pruning and QAT
// for the GPU run (its validation split keeps it quick there).
const deviceLeNet5 = `job "dev5" {
  epochs     = 1
  batch      = 64
  validation = 56000
  augment {
    shift = 1
  }
  model {
    arch    = "lenet5"
    dropout = 0.3
  }
  optimizer "sgd" {
    lr           = 0.05
    momentum     = 0.9
    weight_decay = 5e-4
  }
  prune "magnitude" {
    layers       = ["conv2", "fc1"]
    target       = 0.5
    from_epoch   = 0
    to_epoch     = 0.5
    every_epochs = 0.25
  }
  quantize {
    layers      = ["conv1", "conv2", "fc1", "fc2"]
    bits        = 8
    from_epoch  = 0.5
    granularity = "per_channel"
    symmetric   = true
  }
}
`

// TestCUDARunLeNet5 runs deviceLeNet5 on the GPU and on the CPU reference:
// test accuracy within 0.5 pp. Skipped without a GPU; fails with
// REQUIRE_GPU=1.
func TestCUDARunLeNet5(t *testing.T) {
	gpu := enginetest.CUDA(t)
	ref := host.New(cpu.New(cpu.Options{}))
	defer ref.Close()
	var accs []float64
	for _, dev := range []compute.Device{gpu, ref} {
		j, err := recipes.Parse([]byte(deviceLeNet5), "dev5.hcl", nil)
		if err != nil {
			t.Fatal(err)
		}
		sum, err := Execute(context.Background(), j, Options{RunDir: t.TempDir(), Device: dev})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: test accuracy %.4f, %.0f samples/s, layers %+v", dev.Name(), sum.TestAccuracy, sum.SamplesPerSecond, sum.Layers)
		accs = append(accs, sum.TestAccuracy)
	}
	if math.Abs(accs[0]-accs[1]) > 0.005 {
		t.Fatalf("GPU %v vs CPU %v", accs[0], accs[1])
	}
}

// TestDeviceRunResumesBitIdentical stops a device run in its second
// epoch and resumes it from the epoch-end checkpoint: the model file holds
// the same bits as the uninterrupted run's.
func TestDeviceRunResumesBitIdentical(t *testing.T) {
	dev := host.New(cpu.New(cpu.Options{Threads: 2}))
	defer dev.Close()
	checkDeviceResume(t, dev)
}

// crossRecipe is what both backends train (no dropout: each draws its
// masks its own way): augmentation, momentum, pruning, gradual QAT.
const crossRecipe = `job "cross" {
  epochs     = 2
  batch      = 128
  validation = 50000
  augment {
    shift = 2
  }
  model {
    arch   = "mlp"
    hidden = [64, 32]
  }
  optimizer "sgd" {
    lr           = 0.05
    momentum     = 0.9
    weight_decay = 1e-4
    lr_schedule  = "cosine"
  }
  prune "magnitude" {
    layers       = ["fc1", "fc2"]
    target       = 0.6
    from_epoch   = 0
    to_epoch     = 1.5
    every_epochs = 0.25
  }
  quantize {
    layers      = ["fc1", "fc2", "fc3"]
    bits        = 8
    from_epoch  = 0.5
    granularity = "per_channel"
    symmetric   = true
  }
}
`

// TestCheckpointResumesAcrossBackends: a checkpoint written inside an
// epoch on the strict host device resumes on the CPU graph, and one the
// CPU graph wrote resumes on the device — one format. Each resumed trainer
// first writes its state back (its context is cancelled before the first
// step): parameters, masks and momentum are the bits it was given. Then
// each finishes the run, continuing its history.
func TestCheckpointResumesAcrossBackends(t *testing.T) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	dev := host.NewStrict(cpu.New(cpu.Options{Threads: 2}))
	defer dev.Close()
	parse := func() *recipes.Job {
		j, err := recipes.Parse([]byte(crossRecipe), "cross.hcl", nil)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	for _, tc := range []struct {
		name     string
		from, to compute.Device
	}{{"device to CPU", dev, nil}, {"CPU to device", nil, dev}} {
		dir := t.TempDir()
		ctx, cancel := context.WithCancel(context.Background())
		_, err := Execute(ctx, parse(), Options{RunDir: dir, Device: tc.from, Threads: 2, Progress: func(p trainer.Progress) {
			if p.Epoch == 2 && p.Step >= 20 {
				cancel()
			}
		}})
		cancel()
		if ctx.Err() == nil || err == nil {
			t.Fatalf("%s: the interrupted run: %v", tc.name, err)
		}
		names, err := rundir.CheckpointFiles(filepath.Join(dir, rundir.CheckpointDir))
		if err != nil || len(names) == 0 {
			t.Fatalf("%s: no checkpoint: %v", tc.name, err)
		}
		path := filepath.Join(dir, rundir.CheckpointDir, names[len(names)-1])
		written, err := checkpoint.Read(path)
		if err != nil {
			t.Fatal(err)
		}
		// The other backend takes the state and writes it back at once.
		done, stop := context.WithCancel(context.Background())
		stop()
		if _, err := Execute(done, parse(), Options{RunDir: dir, Device: tc.to, Threads: 2, Resume: true}); !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: resuming with a cancelled context: %v", tc.name, err)
		}
		back, err := checkpoint.Read(path)
		if err != nil {
			t.Fatal(err)
		}
		masks := 0
		for _, w := range written.Tensors {
			b := back.Tensor(w.Name)
			if b == nil || !slices.Equal(b.Shape, w.Shape) || !bitsEqual(b.Data, w.Data) || !slices.Equal(b.Mask, w.Mask) {
				t.Fatalf("%s: tensor %s changed in the other backend's hands", tc.name, w.Name)
			}
			if w.Role == checkpoint.RoleMask {
				masks++
			}
		}
		if masks == 0 || len(back.Tensors) != len(written.Tensors) {
			t.Fatalf("%s: %d masks; %d tensors written back for %d", tc.name, masks, len(back.Tensors), len(written.Tensors))
		}
		sum, err := Execute(context.Background(), parse(), Options{RunDir: dir, Device: tc.to, Threads: 2, Resume: true})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		last := sum.History[len(sum.History)-1]
		if sum.ResumedFromStep == 0 || len(sum.History) != 2 || sum.TestAccuracy < 0.8 || math.Abs(last.Sparsity-0.6) > 0.02 || last.WeightBits != 8 {
			t.Fatalf("%s: resumed from step %d: test accuracy %v, history %+v", tc.name, sum.ResumedFromStep, sum.TestAccuracy, sum.History)
		}
		t.Logf("%s: resumed at step %d, test accuracy %.4f", tc.name, sum.ResumedFromStep, sum.TestAccuracy)
	}
}

func bitsEqual(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}

// TestCUDARunResumesBitIdentical is the same on the GPU (skipped without
// one; fails with REQUIRE_GPU=1): its kernels and cuBLAS give the same
// bits run after run.
func TestCUDARunResumesBitIdentical(t *testing.T) {
	checkDeviceResume(t, enginetest.CUDA(t))
}

func checkDeviceResume(t *testing.T, dev compute.Device) {
	t.Helper()
	parse := func() *recipes.Job {
		j, err := recipes.Parse([]byte(deviceRecipe), "dev.hcl", nil)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	straight := t.TempDir()
	want, err := Execute(context.Background(), parse(), Options{RunDir: straight, Device: dev})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err = Execute(ctx, parse(), Options{RunDir: dir, Device: dev, Progress: func(p trainer.Progress) {
		if p.Epochs == 2 && p.Epoch == 2 && p.Step >= 50 {
			cancel()
		}
	}})
	if err == nil || ctx.Err() == nil {
		t.Fatalf("the interrupted run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, rundir.SummaryFile)); err == nil {
		t.Fatal("an interrupted run left a summary")
	}
	var st rundir.Status
	if b, err := os.ReadFile(filepath.Join(dir, rundir.StatusFile)); err != nil || json.Unmarshal(b, &st) != nil || st.State != "interrupted" {
		t.Fatalf("status.json of the interrupted run: %+v %v", st, err)
	}
	got, err := Execute(context.Background(), parse(), Options{RunDir: dir, Device: dev, Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := weightsDigest(t, filepath.Join(straight, rundir.ModelFile)), weightsDigest(t, filepath.Join(dir, rundir.ModelFile)); a != b {
		t.Fatalf("resumed %s, uninterrupted %s", b, a)
	}
	if got.TestAccuracy != want.TestAccuracy || len(got.History) != 2 || got.History[0].TrainLoss != want.History[0].TrainLoss || got.History[1].ValAccuracy != want.History[1].ValAccuracy {
		t.Fatalf("resumed summary %v %d epochs, uninterrupted %v", got.TestAccuracy, len(got.History), want.TestAccuracy)
	}
	t.Logf("%s: resumed run bit-identical (test accuracy %.4f)", dev.Name(), got.TestAccuracy)
}
