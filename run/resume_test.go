package run

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/onnx"
	"github.com/lathe-ml/lathe/ptq"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/trainer"
)

// everything is a recipe with every kind of training state: dropout
// streams, momentum, masks from a guarded AGP schedule, quantizer controls
// and activation observers, a distillation teacher with a hint (and its
// projection), and checkpoints every 10 steps inside the epochs.
const everything = `job "tiny" {
  epochs     = 4
  batch      = 256
  validation = 50000
  checkpoint {
    every_steps = 10
    keep        = 100
  }
  augment {
    shift = 1
  }
  teacher {
    arch   = "mlp"
    hidden = [48]
    epochs = 1
  }
  distill {
    temperature = 2
    alpha       = 0.5
    hint {
      teacher = "fc1"
      student = "fc1"
      weight  = 0.05
    }
  }
  prune "magnitude" {
    layers       = ["fc1", "fc2"]
    target       = 0.8
    schedule     = "agp"
    from_epoch   = 0.5
    to_epoch     = 3
    every_epochs = 0.25
    guard_tolerance = 0.002
    guard_undo      = true
  }
  quantize {
    layers      = ["fc1", "fc2"]
    bits        = 8
    from_epoch  = 1.5
    gradual     = [4]
    gradual_epochs = [2.5]
    activations = 8
    freeze_observers_epoch = 3.5
  }
  model {
    arch    = "mlp"
    hidden  = [32]
    dropout = 0.2
  }
  optimizer "sgd" {
    lr = 0.05
  }
}
`

func testSet() (*data.Set, error) {
	_, test, err := data.Load("mnist", "")
	return test, err
}

func cpuEngine() compute.Engine { return cpu.New(cpu.Options{Threads: 2}) }

func weightsOf(t *testing.T, path string) string {
	t.Helper()
	f, err := checkpoint.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	return checkpoint.WeightsDigest(f.Tensors)
}

// cancelAt cancels the run's context before a given step: what SIGTERM
// does.
type cancelAt struct {
	step   int64
	cancel context.CancelFunc
}

func (c cancelAt) Name() string { return "cancel" }
func (c cancelAt) BeforeStep(s *trainer.State) error {
	if s.Step == c.step {
		c.cancel()
	}
	return nil
}

// TestResumeIsBitIdentical kills a run at several points (by deleting
// every checkpoint written after the kill point, as SIGKILL would leave
// the directory) and by cancellation (SIGTERM), resumes it, and compares
// the final weights and training state with an uninterrupted run's.
func TestResumeIsBitIdentical(t *testing.T) {
	job, err := recipes.Parse([]byte(everything), "tiny.hcl", nil)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	full := filepath.Join(base, "full")
	want, err := Execute(context.Background(), job, Options{RunDir: full, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if want.ResumedFromStep != 0 || want.History[3].Sparsity < 0.79 || want.History[3].WeightBits != 4 {
		t.Fatalf("uninterrupted run: resumed %d, sparsity %v, bits %d", want.ResumedFromStep, want.History[3].Sparsity, want.History[3].WeightBits)
	}
	names, err := rundir.CheckpointFiles(filepath.Join(full, rundir.CheckpointDir))
	if err != nil || len(names) < 10 {
		t.Fatalf("checkpoints %v %v", names, err)
	}
	if f, err := checkpoint.Read(filepath.Join(full, rundir.CheckpointDir, names[len(names)-1])); err != nil || f.Tensor("hint/projection") == nil ||
		len(f.Tensor("hint/projection").Data) != 32*48 {
		t.Fatalf("the hint's projection is not in the checkpoint: %v", err)
	}
	// best.arrow is the epoch-end checkpoint of the best validation accuracy.
	bf, err := checkpoint.Read(filepath.Join(full, rundir.CheckpointDir, rundir.BestCheckpoint))
	if err != nil {
		t.Fatal(err)
	}
	var bst rundir.TrainingState
	if err := json.Unmarshal(bf.State, &bst); err != nil {
		t.Fatal(err)
	}
	bestVal, h := 0.0, bst.Snapshot.History
	for _, e := range want.History {
		bestVal = max(bestVal, e.ValAccuracy)
	}
	if h[len(h)-1].ValAccuracy != bestVal || bst.Snapshot.StepInEpoch != 0 {
		t.Fatalf("best.arrow holds epoch %d (val %v), the best was %v", len(h), h[len(h)-1].ValAccuracy, bestVal)
	}

	// The model file alone gives the run's test accuracy: its quantized
	// weights are the integers the network computed with.
	mf, err := checkpoint.Read(filepath.Join(full, rundir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	fm, _, err := rundir.LoadModel(mf)
	if err != nil {
		t.Fatal(err)
	}
	test, err := testSet()
	if err != nil {
		t.Fatal(err)
	}
	if acc, _, err := trainer.EvaluateModel(fm, cpuEngine(), test, 1000); err != nil || acc != want.TestAccuracy || mf.Tensor("fc1").Quant == nil || mf.Tensor("fc1").Quant.Bits != 4 {
		t.Fatalf("model file: accuracy %v (%v), run %v; fc1 stored as %s", acc, err, want.TestAccuracy, mf.Tensor("fc1").Encoding)
	}
	if want.ModelBytes != mf.Bytes || want.ModelRatio < 4 {
		t.Fatalf("summary model_bytes %d ratio %v, file %d", want.ModelBytes, want.ModelRatio, mf.Bytes)
	}
	final := filepath.Join(full, rundir.CheckpointDir, names[len(names)-1])
	wantModel, wantState := weightsOf(t, filepath.Join(full, rundir.ModelFile)), weightsOf(t, final)

	copyDir := func(dst string, keepUpTo string) {
		t.Helper()
		if err := os.CopyFS(dst, os.DirFS(full)); err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(dst, rundir.SummaryFile))
		os.Remove(filepath.Join(dst, rundir.ModelFile))
		later, _ := rundir.CheckpointFiles(filepath.Join(dst, rundir.CheckpointDir))
		for _, n := range later {
			if n > keepUpTo {
				os.Remove(filepath.Join(dst, rundir.CheckpointDir, n))
			}
		}
	}
	// Kill points: inside epoch 1 (before pruning), at an epoch's end, in
	// the middle of pruning and quantization, and with the newest
	// checkpoint broken (the one before it is used).
	for k, at := range []int{1, 3, 7, 11} {
		dir := filepath.Join(base, "kill", names[at])
		copyDir(dir, names[at])
		if k == 3 {
			// A torn newest file: the run falls back to the one before it.
			p := filepath.Join(dir, rundir.CheckpointDir, names[at])
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)/2], 0o644)
		}
		got, err := Execute(context.Background(), job, Options{RunDir: dir, Resume: true})
		if err != nil {
			t.Fatalf("resume from %s: %v", names[at], err)
		}
		if got.ResumedFromStep == 0 {
			t.Fatalf("resume from %s: resumed_from_step 0", names[at])
		}
		if g := weightsOf(t, filepath.Join(dir, rundir.ModelFile)); g != wantModel {
			t.Errorf("resumed from %s (step %d): model weights differ from the uninterrupted run's", names[at], got.ResumedFromStep)
		}
		if g := weightsOf(t, filepath.Join(dir, rundir.CheckpointDir, names[len(names)-1])); g != wantState {
			t.Errorf("resumed from %s: final latent weights differ", names[at])
		}
		if got.TestAccuracy != want.TestAccuracy || got.History[3].ValAccuracy != want.History[3].ValAccuracy {
			t.Errorf("resumed from %s: accuracy %v / %v, uninterrupted %v / %v", names[at], got.TestAccuracy, got.History[3].ValAccuracy, want.TestAccuracy, want.History[3].ValAccuracy)
		}
	}

	// SIGTERM: the cancelled run writes a checkpoint where it stopped (the
	// step under way when the signal came finishes first).
	dir := filepath.Join(base, "term")
	ctx, cancel := context.WithCancel(context.Background())
	_, err = Execute(ctx, job, Options{RunDir: dir, Threads: 2, Policies: []trainer.Policy{cancelAt{step: 57, cancel: cancel}}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, rundir.SummaryFile)); err == nil {
		t.Fatal("a cancelled run left a summary")
	}
	got, err := Execute(context.Background(), job, Options{RunDir: dir, Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	if got.ResumedFromStep != 58 || weightsOf(t, filepath.Join(dir, rundir.ModelFile)) != wantModel {
		t.Fatalf("after SIGTERM during step 58: resumed from %d, weights equal %v", got.ResumedFromStep, weightsOf(t, filepath.Join(dir, rundir.ModelFile)) == wantModel)
	}

	// SIGTERM while the teacher trains: the teacher's run checkpoints, and
	// --resume continues it before the student starts.
	tdir := filepath.Join(base, "term-teacher")
	ctx, cancel = context.WithCancel(context.Background())
	calls := 0
	_, err = Execute(ctx, job, Options{RunDir: tdir, Threads: 2, Progress: func(trainer.Progress) {
		if calls++; calls == 10 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled teacher: %v", err)
	}
	if names, _ := rundir.CheckpointFiles(filepath.Join(tdir, "teacher", rundir.CheckpointDir)); len(names) != 1 {
		out, _ := exec.Command("find", tdir).Output()
		t.Fatalf("teacher checkpoints after the signal: %v\n%s", names, out)
	}
	if _, err := Execute(context.Background(), job, Options{RunDir: tdir, Resume: true}); err != nil ||
		weightsOf(t, filepath.Join(tdir, rundir.ModelFile)) != wantModel {
		t.Fatalf("resumed after a signal in the teacher: %v", err)
	}

	// A recipe that changes history is refused; the checkpoint cadence may change.
	changed, err := recipes.Parse([]byte(strings.Replace(everything, "epochs     = 4", "epochs     = 5", 1)), "tiny.hcl", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Execute(context.Background(), changed, Options{RunDir: dir, Resume: true}); err == nil ||
		!strings.Contains(err.Error(), "would change the run's history") || !strings.Contains(err.Error(), `"epochs = 4" → "epochs = 5"`) {
		t.Fatalf("changed epochs: %v", err)
	}
	cadence, err := recipes.Parse([]byte(strings.Replace(everything, "every_steps = 10", "every_steps = 7", 1)), "tiny.hcl", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Execute(context.Background(), cadence, Options{RunDir: dir, Resume: true}); err != nil {
		t.Fatalf("changed cadence: %v", err)
	}
	// Resuming where nothing was written yet starts the run; where only
	// broken checkpoints are, it refuses.
	empty := filepath.Join(base, "empty")
	if got, err := Execute(context.Background(), job, Options{RunDir: empty, Resume: true, Threads: 2}); err != nil || got.ResumedFromStep != 0 ||
		weightsOf(t, filepath.Join(empty, rundir.ModelFile)) != wantModel {
		t.Fatalf("--resume with nothing to resume: %v", err)
	}
	names, _ = rundir.CheckpointFiles(filepath.Join(empty, rundir.CheckpointDir))
	for _, n := range names {
		os.WriteFile(filepath.Join(empty, rundir.CheckpointDir, n), []byte("ARROW1 torn"), 0o644)
	}
	if _, err := Execute(context.Background(), job, Options{RunDir: empty, Resume: true}); err == nil || !strings.Contains(err.Error(), "no valid checkpoint") {
		t.Fatalf("only broken checkpoints: %v", err)
	}
}

// TestTeacherFromModelFile distils from a trained teacher's model.arrow
// instead of training one in the run.
func TestTeacherFromModelFile(t *testing.T) {
	base := t.TempDir()
	tj, err := recipes.Parse([]byte(`job "t" {
  epochs     = 1
  batch      = 256
  validation = 50000
  model {
    arch   = "mlp"
    hidden = [48]
  }
}`), "t.hcl", nil)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := Execute(context.Background(), tj, Options{RunDir: filepath.Join(base, "teacher"), Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	recipe := filepath.Join(base, "student.hcl")
	src := withBlock("teacher {\n    file = \"teacher/model.arrow\"\n  }\n  distill {\n    temperature = 2\n  }")
	if err := os.WriteFile(recipe, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	j, err := recipes.Load(recipe, nil)
	if err != nil {
		t.Fatal(err)
	}
	if j.Teacher.File != filepath.Join(base, "teacher", rundir.ModelFile) {
		t.Fatalf("teacher file %q, want it resolved beside the recipe", j.Teacher.File)
	}
	sum, err := Execute(context.Background(), j, Options{RunDir: filepath.Join(base, "student"), Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if sum.TeacherTestAccuracy != ts.TestAccuracy || sum.History[0].DistillLoss <= 0 {
		t.Fatalf("teacher accuracy %v (its run: %v), distillation term %v", sum.TeacherTestAccuracy, ts.TestAccuracy, sum.History[0].DistillLoss)
	}
	for _, tc := range []struct{ block, want string }{
		{"teacher {\n    hidden = [3]\n  }", "needs arch and epochs"},
		{"teacher {\n    file = \"\"\n    hidden = [3]\n  }", "needs arch and epochs"},
	} {
		if _, err := recipes.Parse([]byte(withBlock(tc.block)), "tiny.hcl", nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v", tc.block, err)
		}
	}
	bad := withBlock("teacher {\n    file = \"missing.arrow\"\n  }\n  distill {\n  }")
	jb, err := recipes.Parse([]byte(bad), filepath.Join(base, "bad.hcl"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Execute(context.Background(), jb, Options{RunDir: filepath.Join(base, "bad")}); err == nil || !strings.Contains(err.Error(), "missing.arrow") {
		t.Fatalf("missing teacher file: %v", err)
	}
}

// resumesExactly runs a recipe uninterrupted, then again from the
// checkpoint at position at (negative: from the end) of its step
// checkpoints as if killed there, and compares the final weights.
func resumesExactly(t *testing.T, src string, at int, vars ...string) {
	t.Helper()
	job, err := recipes.Parse([]byte(src), "tiny.hcl", vars)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	full := filepath.Join(base, "full")
	if _, err := Execute(context.Background(), job, Options{RunDir: full, Threads: 2}); err != nil {
		t.Fatal(err)
	}
	names, _ := rundir.CheckpointFiles(filepath.Join(full, rundir.CheckpointDir))
	if at < 0 {
		at += len(names)
	}
	dir := filepath.Join(base, "killed")
	if err := os.CopyFS(dir, os.DirFS(full)); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, rundir.SummaryFile))
	for _, n := range names[at+1:] {
		os.Remove(filepath.Join(dir, rundir.CheckpointDir, n))
	}
	got, err := Execute(context.Background(), job, Options{RunDir: dir, Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	if got.ResumedFromStep == 0 || weightsOf(t, filepath.Join(dir, rundir.ModelFile)) != weightsOf(t, filepath.Join(full, rundir.ModelFile)) {
		t.Fatalf("resumed from %s (step %d): weights differ from the uninterrupted run's", names[at], got.ResumedFromStep)
	}
}

// TestResumeWithClusters resumes late in the run, after k-means weight
// sharing started: centroids and assignments continue exactly.
func TestResumeWithClusters(t *testing.T) {
	resumesExactly(t, withBlock(`checkpoint {
    every_steps = 8
    keep        = 100
  }
  prune "magnitude" {
    layers     = ["fc1", "fc2"]
    target     = 0.6
    from_epoch = 0
    to_epoch   = 1
  }
  cluster {
    layers     = ["fc1", "fc2"]
    clusters   = 16
    from_epoch = 1.2
  }`), -2, "epochs=2")
}

// TestResumeAfterRebuilds resumes after the model was thinned, and after
// it was factorized, mid-run: the architecture comes from the checkpoint.
func TestResumeAfterRebuilds(t *testing.T) {
	resumesExactly(t, withBlock(`checkpoint {
    every_steps = 10
    keep        = 100
  }
  regularize "group_lasso" {
    layers   = ["fc1"]
    groups   = "rows"
    strength = 0.05
  }
  thin {
    at_epoch = 1
  }`), -2, "epochs=2")
	resumesExactly(t, withBlock(`checkpoint {
    every_steps = 10
    keep        = 100
  }
  factorize {
    layer    = "fc1"
    rank     = 8
    at_epoch = 1
  }`), -3, "epochs=2")
}

// TestModelFromFile: a model block naming a model file starts the run
// from the file's network and trained weights (at a negligible learning
// rate the run ends where the file's model was), fine-tunes it with the
// recipe's policies, and resumes bit for bit; a file of other data and a
// missing file are refused, naming model.file.
func TestModelFromFile(t *testing.T) {
	base := t.TempDir()
	dense := filepath.Join(base, "dense")
	ds, err := Execute(context.Background(), load(t), Options{RunDir: dense, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dense, rundir.ModelFile)
	fromFile := func(extra string) string {
		return strings.Replace(recipe, "    arch   = \"mlp\"\n    hidden = [32]\n", "    file = \""+file+"\"\n", 1) + extra
	}
	j, err := recipes.Parse([]byte(fromFile("")), "tiny.hcl", []string{"lr=1e-9"})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Execute(context.Background(), j, Options{RunDir: filepath.Join(base, "still"), Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(sum.TestAccuracy-ds.TestAccuracy) > 0.002 || sum.Model != "model.arrow" {
		t.Fatalf("from the file at lr 1e-9: %v, the file's model %v (model %q)", sum.TestAccuracy, ds.TestAccuracy, sum.Model)
	}
	pruned := strings.Replace(fromFile(""), "  optimizer", "  prune \"magnitude\" {\n    layers = [\"fc1\"]\n    target = 0.8\n    schedule = \"one_shot\"\n  }\n  checkpoint {\n    every_steps = 10\n  }\n  optimizer", 1)
	resumesExactly(t, pruned, -2, "epochs=2")
	for _, tc := range []struct{ src, want string }{
		{strings.Replace(fromFile(""), "    file = \""+file+"\"", "    file = \"missing.arrow\"", 1), "missing.arrow"},
		{strings.Replace(fromFile(""), "validation = 50000", "validation = 50000\n  dataset = \"fashion-mnist\"", 1), "trained on mnist, the job trains on fashion-mnist"},
		{strings.Replace(recipe, "    arch   = \"mlp\"\n", "", 1), "missing model.arch"},
	} {
		j, err := recipes.Parse([]byte(tc.src), filepath.Join(base, "bad.hcl"), nil)
		if err == nil {
			_, err = Execute(context.Background(), j, Options{RunDir: filepath.Join(base, "bad"), Threads: 2})
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.want, err, tc.want)
		}
	}
}

// TestModelFromONNX: a model block naming an ONNX file (a PyTorch export)
// imports it and starts from its weights (at a negligible learning rate
// the run ends where the imported model is, as lathe's runtime scores
// it), and a pruning fine-tune that distils from the same file as its
// teacher resumes bit for bit.
func TestModelFromONNX(t *testing.T) {
	const file = "../onnx/testdata/mnist_cnn.op17.onnx"
	src := strings.Replace(recipe, "    arch   = \"mlp\"\n    hidden = [32]\n", "    file = \""+file+"\"\n", 1)
	j, err := recipes.Parse([]byte(src), "tiny.hcl", []string{"lr=1e-9"})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Execute(context.Background(), j, Options{RunDir: t.TempDir(), Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	f, err := onnx.ReadModel(file, "mnist")
	if err != nil {
		t.Fatal(err)
	}
	im, err := infer.Load(f, cpu.New(cpu.Options{Threads: 2}))
	if err != nil {
		t.Fatal(err)
	}
	_, test, err := data.Load("mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	want, err := infer.Accuracy(im, test, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(sum.TestAccuracy-want) > 0.002 || sum.Model != "mnist_cnn.op17.onnx" {
		t.Fatalf("from the ONNX file at lr 1e-9: test accuracy %v, the imported model's %v (model %q)", sum.TestAccuracy, want, sum.Model)
	}
	pruned := strings.Replace(src, "  optimizer", "  teacher {\n    file = \""+file+"\"\n  }\n  distill {\n    temperature = 2\n  }\n  prune \"magnitude\" {\n    layers = [\"c2\"]\n    target = 0.5\n    schedule = \"one_shot\"\n  }\n  checkpoint {\n    every_steps = 10\n  }\n  optimizer", 1)
	resumesExactly(t, pruned, -2, "epochs=2")
}

// TestPostTraining: a post_training block compresses the model file before
// the run (GPTQ 4-bit here): at a negligible learning rate the run ends
// where lathe compress's result is; a run fine-tuning after SparseGPT
// resumes bit for bit; without model.file the block is refused.
func TestPostTraining(t *testing.T) {
	const file = "../onnx/testdata/mnist_cnn.op17.onnx"
	src := strings.Replace(recipe, "    arch   = \"mlp\"\n    hidden = [32]\n", "    file = \""+file+"\"\n", 1)
	gptq := strings.Replace(src, "  optimizer", "  post_training {\n    bits    = 4\n    gptq    = true\n    samples = 64\n  }\n  optimizer", 1)
	j, err := recipes.Parse([]byte(gptq), "tiny.hcl", []string{"lr=1e-9"})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Execute(context.Background(), j, Options{RunDir: t.TempDir(), Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	f, err := onnx.ReadModel(file, "mnist")
	if err != nil {
		t.Fatal(err)
	}
	train, test, err := data.Load("mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	rest, _, _ := data.SplitValidation(train, 50000)
	out, _, err := ptq.Compress(f, ptq.Calibration(rest, 64, j.Seed), cpu.New(cpu.Options{Threads: 1}), ptq.Options{Bits: 4, GPTQ: true})
	if err != nil {
		t.Fatal(err)
	}
	im, err := infer.Load(out, cpu.New(cpu.Options{Threads: 2}))
	if err != nil {
		t.Fatal(err)
	}
	want, err := infer.Accuracy(im, test, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(sum.TestAccuracy-want) > 0.002 {
		t.Errorf("after post_training at lr 1e-9: test accuracy %v, lathe compress's model %v", sum.TestAccuracy, want)
	}
	sparse := strings.Replace(src, "  optimizer", "  post_training {\n    prune    = \"sparsegpt\"\n    sparsity = 0.5\n    samples  = 64\n  }\n  checkpoint {\n    every_steps = 10\n  }\n  optimizer", 1)
	resumesExactly(t, sparse, -2, "epochs=2")
	bad := strings.Replace(recipe, "  optimizer", "  post_training {\n    bits = 8\n  }\n  optimizer", 1)
	if j, err := recipes.Parse([]byte(bad), "tiny.hcl", nil); err == nil {
		if _, err = Execute(context.Background(), j, Options{RunDir: t.TempDir(), Threads: 2}); err == nil || !strings.Contains(err.Error(), "post_training") {
			t.Errorf("post_training without model.file: %v", err)
		}
	}
}

// TestNormalizedInput: a model block's mean and std normalize the input
// of an imported ONNX file and of a network the recipe builds: the model
// file keeps the normalization, and the runtime scores it as the run's
// training graph did (a run that normalized differently — the batch
// norms' statistics were gathered on its inputs — would score otherwise);
// the built one resumes bit for bit; a lathe model file, which keeps its
// own, is refused one, naming model.file.
func TestNormalizedInput(t *testing.T) {
	const file = "../onnx/testdata/fashion_resnet8.onnx" // trained on pixel/255: 89.81 %
	norm := "    mean = [0]\n    std  = [0.8]\n"
	src := strings.Replace(recipe, "    arch   = \"mlp\"\n    hidden = [32]\n", "    file = \""+file+"\"\n"+norm, 1)
	src = strings.Replace(src, "  epochs     = var.epochs", "  dataset    = \"fashion-mnist\"\n  epochs     = var.epochs", 1)
	j, err := recipes.Parse([]byte(src), "tiny.hcl", []string{"lr=1e-9"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sum, err := Execute(context.Background(), j, Options{RunDir: dir, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	_, test, err := data.Load("fashion-mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	score := func(f *checkpoint.File) float64 {
		im, err := infer.Load(f, cpu.New(cpu.Options{Threads: 2}))
		if err != nil {
			t.Fatal(err)
		}
		if z := im.Net.Normalize; z == nil || z.Mean[0] != 0 || z.Std[0] != 0.8 {
			t.Fatalf("normalization %+v, want x/0.8", z)
		}
		acc, err := infer.Accuracy(im, test, 1000)
		if err != nil {
			t.Fatal(err)
		}
		return acc
	}
	mf, err := checkpoint.Read(filepath.Join(dir, "model.arrow"))
	if err != nil {
		t.Fatal(err)
	}
	if got := score(mf); math.Abs(sum.TestAccuracy-got) > 0.002 {
		t.Fatalf("the ONNX file normalized: the run scored %v, the runtime on its model file %v", sum.TestAccuracy, got)
	}
	_, test, _ = data.Load("mnist", "")

	built := strings.Replace(recipe, "    hidden = [32]\n", "    hidden = [32]\n"+norm, 1)
	if j, err = recipes.Parse([]byte(built), "tiny.hcl", nil); err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	if sum, err = Execute(context.Background(), j, Options{RunDir: dir, Threads: 2}); err != nil {
		t.Fatal(err)
	}
	if mf, err = checkpoint.Read(filepath.Join(dir, "model.arrow")); err != nil {
		t.Fatal(err)
	}
	if got := score(mf); math.Abs(sum.TestAccuracy-got) > 0.002 {
		t.Fatalf("built and normalized: the run scored %v, the runtime on its model file %v", sum.TestAccuracy, got)
	}
	resumesExactly(t, strings.Replace(built, "  optimizer", "  checkpoint {\n    every_steps = 10\n  }\n  optimizer", 1), -2, "epochs=2")

	onArrow := strings.Replace(recipe, "    arch   = \"mlp\"\n    hidden = [32]\n", "    file = \""+filepath.Join(dir, "model.arrow")+"\"\n"+norm, 1)
	if j, err = recipes.Parse([]byte(onArrow), "tiny.hcl", nil); err != nil {
		t.Fatal(err)
	}
	if _, err = Execute(context.Background(), j, Options{RunDir: t.TempDir(), Threads: 2}); err == nil || !strings.Contains(err.Error(), "keeps the input normalization") || !strings.Contains(err.Error(), "tiny.hcl:") {
		t.Errorf("a model file with model.mean: %v", err)
	}
}
