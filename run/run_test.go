package run

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/trainer"
)

const recipe = `variable "epochs" {
  default = 1
}
variable "batch" {
  default = 256
}
variable "lr" {
  default = 0.05
}
job "tiny" {
  epochs     = var.epochs
  batch      = var.batch
  validation = 50000
  model {
    arch   = "mlp"
    hidden = [32]
  }
  optimizer "sgd" {
    lr = var.lr
  }
}
`

// withBlock inserts a block into the test recipe's job, before its model
// block (at line 14 of the result).
func withBlock(block string) string {
	return strings.Replace(recipe, "  model {", "  "+block+"\n  model {", 1)
}

func load(t *testing.T, vars ...string) *recipes.Job {
	t.Helper()
	j, err := recipes.Parse([]byte(recipe), "tiny.hcl", vars)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// TestExecuteWritesRunDirectory trains a small MLP on 10 000 real MNIST
// images and checks every file the run leaves.
func TestExecuteWritesRunDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	sum, err := Execute(context.Background(), load(t, "epochs=2"), Options{RunDir: dir, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if sum.TestAccuracy < 0.85 || sum.TestAccuracy > 1 || sum.ValAccuracy < 0.85 {
		t.Fatalf("accuracies %v / %v", sum.TestAccuracy, sum.ValAccuracy)
	}
	var onDisk map[string]any
	b, err := os.ReadFile(filepath.Join(dir, rundir.SummaryFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &onDisk); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"job", "dataset", "model", "test_accuracy", "val_accuracy", "epochs", "steps", "samples_per_second",
		"wall_seconds", "params_total", "params_nonzero", "dense_bytes", "peak_rss_bytes", "layers"} {
		if _, ok := onDisk[k]; !ok {
			t.Errorf("summary.json lacks %q", k)
		}
	}
	if sum.ParamsTotal != 784*32+32+32*10+10 || sum.DenseBytes != 4*sum.ParamsTotal || sum.Steps != 2*(10000/256) {
		t.Fatalf("summary %+v", sum)
	}
	if len(sum.Layers) != 2 || sum.Layers[0].Name != "fc1" || sum.Layers[0].Params != 784*32+32 {
		t.Fatalf("layers %+v", sum.Layers)
	}
	f, _ := os.Open(filepath.Join(dir, rundir.MetricsFile))
	rows, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil || len(rows) != 3 || rows[0][0] != "epoch" {
		t.Fatalf("metrics.csv: %v %v", rows, err)
	}
	resolved, err := recipes.Load(filepath.Join(dir, rundir.RecipeFile), nil)
	if err != nil {
		t.Fatalf("resolved recipe: %v", err)
	}
	if resolved.Epochs != 2 || resolved.Validation != 50000 {
		t.Fatalf("resolved recipe %+v", resolved)
	}
	var st rundir.Status
	b, _ = os.ReadFile(filepath.Join(dir, rundir.StatusFile))
	if err := json.Unmarshal(b, &st); err != nil || st.State != "done" || st.Job != "tiny" || st.Step != sum.Steps ||
		st.SamplesSeen != sum.Steps*256 || st.Epoch != 2 || st.Epochs != 2 || st.LastLoss <= 0 || st.Updated.IsZero() {
		t.Fatalf("status.json %+v %v", st, err)
	}
	var m rundir.Manifest
	b, _ = os.ReadFile(filepath.Join(dir, rundir.ManifestFile))
	if err := json.Unmarshal(b, &m); err != nil || m.Job != "tiny" || m.Compute.Threads != 2 || m.GoVersion == "" {
		t.Fatalf("manifest %+v %v", m, err)
	}

	// The same job may run again in its own directory.
	if _, err := Execute(context.Background(), load(t), Options{RunDir: dir, Threads: 2}); err != nil {
		t.Fatalf("rerun: %v", err)
	}
	// Another job may not.
	other := load(t)
	other.Name = "other"
	if _, err := Execute(context.Background(), other, Options{RunDir: dir}); !errors.Is(err, rundir.ErrForeign) {
		t.Fatalf("another job's directory: %v", err)
	}
	// Nor may a directory holding unrelated files.
	junk := t.TempDir()
	os.WriteFile(filepath.Join(junk, "notes.txt"), []byte("mine"), 0o644)
	if _, err := Execute(context.Background(), load(t), Options{RunDir: junk}); !errors.Is(err, rundir.ErrForeign) {
		t.Fatalf("unrelated directory: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(junk, "notes.txt")); string(b) != "mine" {
		t.Fatal("unrelated file touched")
	}
}

// poison puts a NaN into the first weight before a given step, as a
// diverging run would.
type poison struct{ at int64 }

func (p poison) Name() string { return "poison" }
func (p poison) BeforeStep(s *trainer.State) error {
	if s.Step == p.at {
		s.Params[0][0] = float32(math.NaN())
	}
	return nil
}

func TestNonFiniteLossLeavesNoSummary(t *testing.T) {
	dir := t.TempDir()
	_, err := Execute(context.Background(), load(t), Options{RunDir: dir, Threads: 2, Policies: []trainer.Policy{poison{at: 6}}})
	if !errors.Is(err, trainer.ErrNonFinite) || !strings.Contains(err.Error(), "at step 7 ") {
		t.Fatalf("error %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, rundir.SummaryFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a summary was written for a failed run")
	}
	var st rundir.Status
	b, _ := os.ReadFile(filepath.Join(dir, rundir.StatusFile))
	if err := json.Unmarshal(b, &st); err != nil || st.State != "failed" || !strings.Contains(st.Error, "step 7") {
		t.Fatalf("status.json of a failed run: %+v %v", st, err)
	}
}

// TestStatusIsRewrittenWhileTraining reads status.json during a run: it
// exists, parses, and moves on, every StatusEvery at the latest.
func TestStatusIsRewrittenWhileTraining(t *testing.T) {
	dir := t.TempDir()
	defer func(d time.Duration) { rundir.StatusEvery = d }(rundir.StatusEvery)
	rundir.StatusEvery = 100 * time.Millisecond
	var seen []rundir.Status
	slow := func(p trainer.Progress) {
		if p.Step%13 == 0 {
			time.Sleep(200 * time.Millisecond) // a step slower than the writer's timer, four of its ticks
			var st rundir.Status
			if b, err := os.ReadFile(filepath.Join(dir, rundir.StatusFile)); err == nil && json.Unmarshal(b, &st) == nil {
				seen = append(seen, st)
			}
		}
	}
	if _, err := Execute(context.Background(), load(t, "epochs=1"), Options{RunDir: dir, Threads: 2, Progress: slow}); err != nil {
		t.Fatal(err)
	}
	if len(seen) < 3 {
		t.Fatalf("status.json read %d times during the run", len(seen))
	}
	for i, st := range seen {
		if st.State != "training" || st.StepsPerEpoch != 39 {
			t.Fatalf("read %d: %+v", i, st)
		}
		if i > 0 && (st.Step < seen[i-1].Step || !st.Updated.After(seen[i-1].Updated)) {
			t.Fatalf("status went backwards or stood still: %+v then %+v", seen[i-1], st)
		}
	}
}

func TestMissingDatasetNamesInstall(t *testing.T) {
	_, err := Execute(context.Background(), load(t), Options{RunDir: t.TempDir(), DataDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "train-images-idx3-ubyte.gz is missing") {
		t.Fatalf("error %v", err)
	}
}

func TestLayerChecksPointAtTheRecipe(t *testing.T) {
	for _, tc := range []struct{ block, want string }{
		{"prune \"magnitude\" {\n    layers = [\"fc9\"]\n    target = 0.5\n  }", "tiny.hcl:15,14: model mlp has no layer \"fc9\" (its weights: fc1, fc2)"},
		{"prune \"structured\" {\n    layers = [\"fc1\"]\n    target = 0.5\n    granularity = \"filters\"\n  }", "tiny.hcl:17,19: granularity \"filters\" does not fit layer fc1 [32 784] (allowed: rows, columns)"},
		{"regularize \"group_lasso\" {\n    layers = [\"fc2\"]\n    groups = \"channels\"\n    strength = 0.1\n  }", "tiny.hcl:16,14: granularity \"channels\" does not fit layer fc2"},
		{"factorize {\n    layer = \"fc1\"\n    rank = 33\n    at_epoch = 0\n  }", "tiny.hcl:16,12: rank 33 is larger than layer fc1 [32 784] allows (at most 32)"},
		{"factorize {\n    layer = \"fc7\"\n    rank = 3\n    at_epoch = 0\n  }", "tiny.hcl:15,13: model mlp has no layer \"fc7\""},
	} {
		src := withBlock(tc.block)
		j, err := recipes.Parse([]byte(src), "tiny.hcl", nil)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		_, err = Execute(context.Background(), j, Options{RunDir: dir})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("error %v, want %q", err, tc.want)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Fatalf("a rejected recipe wrote %d files into the run directory", len(entries))
		}
	}
}

// TestPruningAndGroupLassoRun trains with AGP pruning and group lasso on real
// data and checks what the summary and metrics report.
func TestPruningAndGroupLassoRun(t *testing.T) {
	block := `prune "magnitude" {
    layers     = ["fc1", "fc2"]
    target     = 0.8
    scope      = "global"
    from_epoch = 0
    to_epoch   = 1
    every_steps = 5
  }
  regularize "group_lasso" {
    layers   = ["fc1"]
    groups   = "rows"
    strength = 1e-2
  }`
	src := withBlock(block)
	j, err := recipes.Parse([]byte(src), "tiny.hcl", []string{"epochs=2"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sum, err := Execute(context.Background(), j, Options{RunDir: dir, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	var zeros, total int
	for _, l := range sum.Layers[:2] {
		zeros += int(l.Sparsity*float64(l.Params-l.Shape[0]) + 0.5)
		total += l.Params - l.Shape[0]
	}
	if s := float64(zeros) / float64(total); s < 0.8-1e-3 {
		t.Fatalf("fc1+fc2 sparsity %.4f, want ≥ 0.8 (group lasso only adds zeros)", s)
	}
	if sum.Layers[0].StructuredSparsity == 0 {
		t.Fatal("group lasso zeroed no row of fc1")
	}
	last := sum.History[len(sum.History)-1]
	if last.ExtraLoss <= 0 || len(last.LayerSparsity) != 2 {
		t.Fatalf("history %+v", last)
	}
	b, _ := os.ReadFile(filepath.Join(dir, rundir.MetricsFile))
	if !strings.Contains(string(b), "extra_loss") || !strings.Contains(string(b), "sparsity_fc2") {
		t.Fatalf("metrics.csv header: %s", strings.SplitN(string(b), "\n", 2)[0])
	}
	if sum.Thinned == nil || sum.Thinned.ParamsTotal >= sum.ParamsTotal || sum.Thinned.Layers[0].Removed == 0 ||
		sum.Layers[0].ThinnedShape[0] != sum.Layers[0].Shape[0]-sum.Thinned.Layers[0].Removed {
		t.Fatalf("no thinned model reported: %+v", sum.Thinned)
	}
	// Thinning computes the same function: the same test accuracy, up to
	// float32 rounding flipping a near-tie (at most a few of 10 000).
	if d := math.Abs(sum.Thinned.TestAccuracy - sum.TestAccuracy); d > 5e-4 {
		t.Fatalf("thinned accuracy %v vs %v", sum.Thinned.TestAccuracy, sum.TestAccuracy)
	}
	if sum.TestAccuracy < 0.7 { // still learns: a 32-unit net, 2 epochs on 10 000 images
		t.Fatalf("test accuracy %.3f", sum.TestAccuracy)
	}
}

// sensitivityBlocks run a sensitivity analysis after the first epoch and
// prune by its suggestions.
const sensitivityBlocks = `sensitivity {
    layers     = ["fc1", "fc2"]
    sparsities = [0.3, 0.6, 0.9]
    tolerance  = 0.02
    at_epoch   = 1
  }
  prune "magnitude" {
    layers       = ["fc1", "fc2"]
    targets_from = "sensitivity"
    from_epoch   = 1
    to_epoch     = 2
    every_steps  = 10
  }`

func TestSensitivityFeedsPerLayerTargets(t *testing.T) {
	src := withBlock(sensitivityBlocks)
	j, err := recipes.Parse([]byte(src), "tiny.hcl", []string{"epochs=3"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sum, err := Execute(context.Background(), j, Options{RunDir: dir, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	var table trainer.SensitivityTable
	b, err := os.ReadFile(filepath.Join(dir, rundir.SensitivityFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &table); err != nil || len(table.Rows) != 6 || table.Epoch != 1 {
		t.Fatalf("sensitivity.json: %+v %v", table, err)
	}
	if _, err := os.Stat(filepath.Join(dir, rundir.SensitivityCSV)); err != nil {
		t.Fatal(err)
	}
	for _, l := range sum.Layers[:2] {
		want := table.Suggested[l.Name]
		weights := l.Params - l.Shape[0]
		if got := l.Sparsity; math.Abs(got-want) > 1.0/float64(weights)+1e-9 {
			t.Fatalf("%s: sparsity %v, suggested target %v", l.Name, got, want)
		}
		// A suggestion keeps accuracy within the tolerance in the table.
		for _, r := range table.Rows {
			if r.Layer == l.Name && r.Sparsity == want && r.Accuracy < table.Baseline-table.Tolerance {
				t.Fatalf("suggested %v for %s lost more than the tolerance", want, l.Name)
			}
		}
	}
}

func TestDryRunShowsWindowsAndGuards(t *testing.T) {
	block := `prune "magnitude" {
    layers          = ["fc1"]
    target          = 0.5
    from_epoch      = 1
    to_epoch        = 3
    guard_tolerance = 0.01
  }
  thin {
    at_epoch = 4
  }`
	src := withBlock(block)
	j, err := recipes.Parse([]byte(src), "tiny.hcl", []string{"epochs=5"})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := DryRun(&b, j); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3+1+5 || !strings.Contains(lines[1], "policies: lr/cosine, prune/magnitude#1") || !strings.Contains(lines[3], "prune.0 magnitude fc1 (guarded)") {
		t.Fatalf("dry run:\n%s", out)
	}
	if !strings.Contains(lines[4], " - ") || !strings.Contains(lines[7], "50.00%") || !strings.Contains(lines[8], "thin") {
		t.Fatalf("dry run rows:\n%s", out)
	}
	// The same checks as a run: a layer the model lacks is an error with its position.
	bad, _ := recipes.Parse([]byte(strings.Replace(src, `["fc1"]`, `["fc5"]`, 1)), "tiny.hcl", []string{"epochs=5"})
	if err := DryRun(io.Discard, bad); err == nil || !strings.Contains(err.Error(), "tiny.hcl:15,23") {
		t.Fatalf("dry run of a bad layer: %v", err)
	}
}

func TestQuantizationAwareTraining(t *testing.T) {
	block := `quantize {
    layers         = ["fc1", "fc2"]
    bits           = 8
    from_epoch     = 1
    gradual        = [4]
    gradual_epochs = [2]
    layer_bits     = { fc2 = 8 }
    activations    = 8
    freeze_observers_epoch = 2.5
  }`
	src := withBlock(block)
	j, err := recipes.Parse([]byte(src), "tiny.hcl", []string{"epochs=3"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sum, m, err := execute(context.Background(), j, Options{RunDir: dir, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Layers[0].Bits != 4 || sum.Layers[1].Bits != 8 {
		t.Fatalf("bits %d / %d, want 4 (gradual) and 8 (pinned)", sum.Layers[0].Bits, sum.Layers[1].Bits)
	}
	if got := []int{sum.History[0].WeightBits, sum.History[1].WeightBits, sum.History[2].WeightBits}; got[0] != 0 || got[1] != 8 || got[2] != 4 {
		t.Fatalf("weight bits by epoch %v, want [0 8 4] (float in epoch 1, 8 bits from epoch 2, 4 from epoch 3)", got)
	}
	if sum.TestAccuracy < 0.85 || sum.PTQ != nil {
		t.Fatalf("accuracy %v, ptq %v", sum.TestAccuracy, sum.PTQ)
	}
	// The hidden activations were quantized with an observer that froze.
	if obs := m.ActQuant["fc1"]; obs == nil || !obs.Frozen || !obs.Enabled || !(obs.Max > 0) || m.ActQuant["fc2"] != nil {
		t.Fatalf("activation observers %+v", m.ActQuant)
	}
	if sum.ECEUncompressed == nil || sum.FloatAgreement == nil || *sum.FloatAgreement < 0.9 {
		t.Fatalf("float counterpart: ECE %v agreement %v", sum.ECEUncompressed, sum.FloatAgreement)
	}
	// Each digit's recall, and their mean near the accuracy (MNIST's
	// classes are about equally frequent).
	if len(sum.PerClassRecall) != 10 || len(sum.Confusion) != 10 || math.Abs(sum.MacroAccuracy-sum.TestAccuracy) > 0.02 {
		t.Fatalf("per-class recall %d values, macro accuracy %v at test accuracy %v", len(sum.PerClassRecall), sum.MacroAccuracy, sum.TestAccuracy)
	}
	for c, r := range sum.PerClassRecall {
		if r == nil || !(*r > 0.5 && *r <= 1) {
			t.Fatalf("class %d recall %v", c, r)
		}
	}
	// A run without quantization reports the post-training baseline.
	plain, err := Execute(context.Background(), load(t), Options{RunDir: t.TempDir(), Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if a8, a4 := plain.PTQ["8"], plain.PTQ["4"]; a8 < plain.TestAccuracy-0.01 || a4 <= 0.1 || a4 > a8+0.01 {
		t.Fatalf("ptq %v for float accuracy %v", plain.PTQ, plain.TestAccuracy)
	}
	for _, tc := range []struct{ block, want string }{
		{"quantize {\n    layers = [\"fc1\"]\n    from_epoch = 1\n    activations = 8\n    freeze_observers_epoch = 0.5\n  }", "tiny.hcl:18,30: invalid quantize; observers frozen at epoch 0.5, before they start at from_epoch = 1"},
		{"quantize {\n    layers = [\"fc1\"]\n    bits = 9\n  }", "tiny.hcl:16,12: value out of range; quantize.bits = 9 is outside [2, 8]"},
		{"quantize {\n    layers = [\"fc4\"]\n  }", "tiny.hcl:15,14: model mlp has no layer \"fc4\""},
		{"quantize {\n    layers = [\"fc*\"]\n    freeze_bn_epoch = 1\n  }", "model mlp has no batch norm to freeze"},
	} {
		j, err := recipes.Parse([]byte(withBlock(tc.block)), "tiny.hcl", nil)
		if err == nil {
			_, err = Execute(context.Background(), j, Options{RunDir: t.TempDir()})
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("error %v, want %q", err, tc.want)
		}
	}
}

func TestTeacherThenDistillation(t *testing.T) {
	block := `teacher {
    arch   = "mlp"
    hidden = [64]
    epochs = 2
  }
  distill {
    temperature = 2
    alpha       = 0.5
  }`
	src := withBlock(block)
	j, err := recipes.Parse([]byte(src), "tiny.hcl", []string{"epochs=2"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sum, err := Execute(context.Background(), j, Options{RunDir: dir, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "teacher", rundir.SummaryFile))
	if err != nil {
		t.Fatalf("the teacher's run: %v", err)
	}
	var ts rundir.Summary
	if err := json.Unmarshal(b, &ts); err != nil || ts.Job != "tiny-teacher" || ts.ParamsTotal != 784*64+64+64*10+10 {
		t.Fatalf("teacher summary %+v %v", ts, err)
	}
	if h := sum.History[len(sum.History)-1]; h.DistillLoss <= 0 || h.DistillLoss >= h.TrainLoss {
		t.Fatalf("distillation term %v of loss %v", h.DistillLoss, h.TrainLoss)
	}
	if sum.TeacherAgreement == nil || *sum.TeacherAgreement < 0.8 || sum.ECE <= 0 || sum.ECE > 0.2 {
		t.Fatalf("teacher agreement %v, ECE %v", sum.TeacherAgreement, sum.ECE)
	}
	if sum.TeacherTestAccuracy != ts.TestAccuracy || sum.TestAccuracy < 0.8 { // 2 epochs on 10 000 images
		t.Fatalf("teacher %v (own summary %v), student %v", sum.TeacherTestAccuracy, ts.TestAccuracy, sum.TestAccuracy)
	}
	if _, err := recipes.Parse([]byte(withBlock("distill {\n  }")), "tiny.hcl", nil); err == nil ||
		!strings.Contains(err.Error(), "tiny.hcl:14,3: missing teacher") {
		t.Fatalf("distill without a teacher: %v", err)
	}
}

func TestTeacherEnsemble(t *testing.T) {
	block := `teacher {
    arch   = "mlp"
    hidden = [32]
    epochs = 1
    count  = 2
  }
  distill {
    temperature = 2
  }`
	src := withBlock(block)
	j, err := recipes.Parse([]byte(src), "tiny.hcl", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sum, err := Execute(context.Background(), j, Options{RunDir: dir, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	var seeds []uint64
	for _, sub := range []string{"teacher-1", "teacher-2"} {
		b, err := os.ReadFile(filepath.Join(dir, sub, rundir.SummaryFile))
		if err != nil {
			t.Fatal(err)
		}
		var ts rundir.Summary
		json.Unmarshal(b, &ts)
		seeds = append(seeds, ts.Seed)
	}
	if seeds[0] == seeds[1] || sum.TeacherAgreement == nil || sum.TeacherTestAccuracy < 0.5 {
		t.Fatalf("teacher seeds %v, agreement %v, ensemble accuracy %v", seeds, sum.TeacherAgreement, sum.TeacherTestAccuracy)
	}
}

// TestClusteredWeightsShareValues trains with pruning then k-means weight
// sharing and checks that each clustered weight holds at most the given
// number of distinct non-zero values, stays pruned where pruned, and that
// the model file stores it as a codebook.
func TestClusteredWeightsShareValues(t *testing.T) {
	src := withBlock(`prune "magnitude" {
    layers     = ["fc1", "fc2"]
    target     = 0.7
    from_epoch = 0
    to_epoch   = 1
  }
  cluster {
    layers     = ["fc1", "fc2"]
    clusters   = 8
    from_epoch = 1.5
  }`)
	j, err := recipes.Parse([]byte(src), "tiny.hcl", []string{"epochs=3"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sum, m, err := execute(context.Background(), j, Options{RunDir: dir, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range m.Weights() {
		distinct := map[float32]bool{}
		zeros := 0
		for _, v := range w.Data() {
			if v == 0 {
				zeros++
			} else {
				distinct[v] = true
			}
		}
		if len(distinct) > 8 || len(distinct) < 2 || float64(zeros)/float64(w.Size()) < 0.69 {
			t.Fatalf("%s: %d distinct values, %d zeros of %d", w.Name, len(distinct), zeros, w.Size())
		}
	}
	if sum.TestAccuracy < 0.8 {
		t.Fatalf("accuracy %v", sum.TestAccuracy)
	}
	f, err := checkpoint.Read(filepath.Join(dir, rundir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	if e := f.Tensor("fc1").Encoding; e != checkpoint.EncSparseCodebook {
		t.Fatalf("fc1 stored as %s", e)
	}
	for _, tc := range []struct{ block, want string }{
		{"cluster {\n    layers = [\"fc1\"]\n    clusters = 300\n  }", "cluster.clusters = 300 is outside [2, 255]"},
		{"cluster {\n    layers = [\"fc9\"]\n  }", "no layer \"fc9\""},
	} {
		j, err := recipes.Parse([]byte(withBlock(tc.block)), "tiny.hcl", nil)
		if err == nil {
			_, err = Execute(context.Background(), j, Options{RunDir: t.TempDir()})
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}

// TestHintDistillation trains with a hint between the teacher's and the
// student's hidden layers: the projection learns (it starts at zero), the
// distillation term includes the hint, and bad layers are refused with
// the recipe's position.
func TestHintDistillation(t *testing.T) {
	hint := func(teacher, student string) string {
		return withBlock(`teacher {
    arch   = "mlp"
    hidden = [40]
    epochs = 1
  }
  distill {
    temperature = 2
    hint {
      teacher = "` + teacher + `"
      student = "` + student + `"
      weight  = 0.02
    }
  }`)
	}
	j, err := recipes.Parse([]byte(hint("fc1", "fc1")), "tiny.hcl", []string{"epochs=2"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sum, err := Execute(context.Background(), j, Options{RunDir: dir, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	names, _ := rundir.CheckpointFiles(filepath.Join(dir, rundir.CheckpointDir))
	f, err := checkpoint.Read(filepath.Join(dir, rundir.CheckpointDir, names[len(names)-1]))
	if err != nil {
		t.Fatal(err)
	}
	p := f.Tensor("hint/projection")
	nonzero := 0
	for _, v := range p.Data {
		if v != 0 {
			nonzero++
		}
	}
	if len(p.Data) != 32*40 || nonzero < len(p.Data)/2 || sum.TestAccuracy < 0.8 || sum.History[1].DistillLoss >= sum.History[0].DistillLoss {
		t.Fatalf("projection %d values (%d non-zero), accuracy %v, distillation terms %v then %v", len(p.Data), nonzero, sum.TestAccuracy,
			sum.History[0].DistillLoss, sum.History[1].DistillLoss)
	}
	for _, tc := range []struct{ teacher, student, want string }{
		{"fc1", "fc2", `tiny.hcl:21,5: the student (mlp) has no hidden layer "fc2" (it has fc1)`},
		{"fc7", "fc1", `tiny.hcl:21,5: the teacher (mlp) has no hidden layer "fc7" (it has fc1)`},
	} {
		j, err := recipes.Parse([]byte(hint(tc.teacher, tc.student)), "tiny.hcl", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Execute(context.Background(), j, Options{RunDir: t.TempDir(), Threads: 2}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}

// TestResNetRecipe: a recipe names the ResNet preset by depth; the plan
// builds it with the anchor's parameter count and its batch norms'
// buffers; a depth that is not 6n+2 is refused at the recipe's position.
// (Training it is trainer's TestResNetTrainsAndResumes: a run here
// evaluates 60 000 images.)
func TestResNetRecipe(t *testing.T) {
	src := strings.Replace(recipe, "arch   = \"mlp\"\n    hidden = [32]", "arch  = \"resnet\"\n    depth = 8", 1)
	job, err := recipes.Parse([]byte(src), "resnet.hcl", nil)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := Build(job, trainOf(job, 10000), nil)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Model.NumParams() != 77754 || len(plan.Model.Buffers) != 2*9 || plan.Model.Net.MACs() < 9_000_000 {
		t.Fatalf("%d parameters, %d buffers, %d MACs", plan.Model.NumParams(), len(plan.Model.Buffers), plan.Model.Net.MACs())
	}
	pruned, err := recipes.Parse([]byte(strings.Replace(src, "  model {", "  prune \"structured\" {\n    layers = [\"conv1\", \"block3.conv1\"]\n    granularity = \"groups\"\n    target = 0.5\n  }\n  model {", 1)), "resnet.hcl", nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := Build(pruned, trainOf(pruned, 10000), nil); err != nil || len(p.Prune) != 1 {
		t.Fatalf("dependency-group pruning: %v", err)
	}
	thin, err := recipes.Parse([]byte(strings.Replace(src, "validation = 50000", "validation = 50000\n  thin {\n    at_epoch = 2\n  }", 1)), "resnet.hcl", []string{"epochs=3"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Build(thin, trainOf(thin, 10000), nil); err == nil || !strings.Contains(err.Error(), "resnet.hcl:") || !strings.Contains(err.Error(), "thin block rebuilds chains") {
		t.Fatalf("a thin block on a ResNet: %v", err)
	}
	// Quantization over a pattern of layers: every convolution trains with
	// its batch norm folded in; activations are quantized after each folded
	// batch norm and each residual addition.
	qat := func(block string) string {
		return strings.Replace(src, "  model {", "  quantize {\n"+block+"\n  }\n  model {", 1)
	}
	qj, err := recipes.Parse([]byte(qat(`    layers = ["*"]
    activations = 8
    freeze_bn_epoch = 1.5`)), "resnet.hcl", []string{"epochs=2"})
	if err != nil {
		t.Fatal(err)
	}
	qp, err := Build(qj, trainOf(qj, 10000), nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := qp.Model; len(m.Quant) != 10 || len(m.Fold) != 9 || m.Fold["block2.sc"] != "block2.sc.bn" || len(m.ActQuant) != 12 ||
		m.ActQuant["block3.add"] == nil || m.ActQuant["bn1"] == nil || m.BN == nil || qp.Quantize.FreezeBNAt != qp.EpochSamples*3/2 {
		t.Fatalf("quantized %d, folded %v, observers %d, batch norm control %v, freeze at %d", len(m.Quant), m.Fold, len(m.ActQuant), m.BN, qp.Quantize.FreezeBNAt)
	}
	for block, want := range map[string]string{
		`    layers = ["block9.*"]`: `resnet.hcl:15,14: model resnet has no layer "block9.*"`,
		`    layers = ["conv["]`:    `resnet.hcl:15,14: layer pattern "conv[": syntax error in pattern`,
	} {
		j, err := recipes.Parse([]byte(qat(block)), "resnet.hcl", nil)
		if err == nil {
			_, err = Build(j, trainOf(j, 10000), nil)
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want %q", err, want)
		}
	}
	bad, _ := recipes.Parse([]byte(strings.Replace(src, "depth = 8", "depth = 9", 1)), "resnet.hcl", nil)
	if _, err := Build(bad, trainOf(bad, 10000), nil); err == nil || !strings.Contains(err.Error(), "resnet.hcl:") || !strings.Contains(err.Error(), "6n+2") {
		t.Fatalf("depth 9: %v", err)
	}
}

// TestClipNormAndNoDecayRun: a run with gradient clipping and biases left
// out of weight decay trains (the arithmetic is trainer's
// TestClipAndNoDecay), and its resolved recipe keeps both.
func TestClipNormAndNoDecayRun(t *testing.T) {
	src := strings.Replace(recipe, "lr = var.lr", "lr = var.lr\n    weight_decay = 0.01\n    clip_norm = 1\n    no_decay = [\"bias\"]", 1)
	job, err := recipes.Parse([]byte(src), "tiny.hcl", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sum, err := Execute(context.Background(), job, Options{RunDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("test accuracy %.3f", sum.TestAccuracy)
	b, err := os.ReadFile(filepath.Join(dir, rundir.RecipeFile))
	if err != nil || !strings.Contains(string(b), "clip_norm") || !strings.Contains(string(b), "no_decay") || sum.TestAccuracy < 0.6 {
		t.Fatalf("test accuracy %.3f; resolved recipe:\n%s", sum.TestAccuracy, b)
	}
}

// TestTeacherJobKeepsTheSplits: a teacher the recipe trains sees the
// student's data — the same files, held-out fractions, split seed, windows
// per document and validation count — and none of its compression.
func TestTeacherJobKeepsTheSplits(t *testing.T) {
	job := &recipes.Job{Name: "j", Dataset: "text", DataDir: "/srv/t", Seed: 3, Batch: 32, Validation: 0,
		TestFraction: 0.2, ValidationFraction: 0.1, SplitSeed: 7, TrainWindows: 16, ImageSize: []int{8, 8},
		ClassBalance: true, LabelSmoothing: 0.1,
		Teacher:  &recipes.Teacher{Count: 2, Epochs: 4, Model: recipes.Model{Arch: "transformer"}},
		Prune:    []recipes.Prune{{Layers: []string{"b1.fc1"}}},
		Quantize: &recipes.Quantize{Bits: 8},
	}
	tj := teacherJob(job, 1)
	if got, want := tj.Files(), job.Files(); got.TestFraction != want.TestFraction || got.ValidationFraction != want.ValidationFraction ||
		got.Seed != want.Seed || got.TrainWindows != want.TrainWindows || got.ImageSize != want.ImageSize {
		t.Fatalf("teacher's files %+v, the student's %+v", got, want)
	}
	if tj.Dataset != job.Dataset || tj.DataDir != job.DataDir || tj.Validation != job.Validation || tj.Batch != job.Batch ||
		!tj.ClassBalance || tj.LabelSmoothing != job.LabelSmoothing {
		t.Fatalf("teacher job %+v differs from the student's data settings", tj)
	}
	if tj.Seed != 4 || tj.Epochs != 4 || tj.Model.Arch != "transformer" || tj.Teacher != nil || tj.Prune != nil || tj.Quantize != nil {
		t.Fatalf("teacher job %+v: want seed 4, 4 epochs, the teacher's model and no compression", tj)
	}
}
