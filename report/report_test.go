package report

import (
	"bytes"
	"context"
	"image"
	_ "image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/run"
	"github.com/lathe-ml/lathe/rundir"
)

// A run with everything the report draws: a teacher trained first,
// distillation, gradual pruning, gradual quantization and a sensitivity
// analysis, on 5 000 real MNIST images.
const full = `variable "epochs" {
  default = 3
}
variable "batch" {
  default = 100
}
variable "lr" {
  default = 0.05
}
job "report" {
  epochs     = var.epochs
  batch      = var.batch
  validation = 55000
  model {
    arch   = "mlp"
    hidden = [32, 16]
  }
  optimizer "sgd" {
    lr = var.lr
  }
  teacher {
    epochs = 2
    arch   = "mlp"
    hidden = [64]
  }
  distill {
    temperature = 2
  }
  prune "magnitude" {
    layers     = ["fc1", "fc2"]
    target     = 0.6
    from_epoch = 0.5
    to_epoch   = 2.5
  }
  quantize {
    layers         = ["fc1", "fc2", "fc3"]
    bits           = 8
    from_epoch     = 1
    gradual        = [6]
    gradual_epochs = [2]
  }
  sensitivity {
    layers     = ["fc1", "fc2"]
    sparsities = [0.5, 0.9]
    at_epoch   = 1
  }
}
`

func train(t *testing.T, dir string, vars ...string) {
	t.Helper()
	j, err := recipes.Parse([]byte(full), filepath.Join(t.TempDir(), "report.hcl"), vars)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := run.Execute(context.Background(), j, run.Options{RunDir: dir, Threads: 2}); err != nil {
		t.Fatal(err)
	}
}

// checkPNG decodes a figure and checks it is more than a blank canvas.
func checkPNG(t *testing.T, f Figure) {
	t.Helper()
	img, _, err := image.Decode(bytes.NewReader(f.PNG))
	if err != nil {
		t.Fatalf("%s: %v", f.Name, err)
	}
	colours := map[[3]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[[3]uint32{r >> 8, g >> 8, bl >> 8}] = true
		}
	}
	if b.Dx() < 300 || len(colours) < 4 {
		t.Fatalf("%s: %v image with %d colours", f.Name, b, len(colours))
	}
	onDisk, err := os.ReadFile(f.File)
	if err != nil || !bytes.Equal(onDisk, f.PNG) {
		t.Fatalf("%s: the PNG beside the report (%v) differs from the embedded one", f.Name, err)
	}
}

func TestReportOfAFullRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	train(t, dir)
	rep, err := Write(dir, Options{Runtime: true, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if rep.State != "done" || rep.Job != "report" {
		t.Fatalf("state %q job %q", rep.State, rep.Job)
	}
	for _, name := range []string{"loss", "accuracy", "teacher", "sparsity", "bits", "lr", "sensitivity", "model-bytes", "kernel-latency"} {
		f := rep.Figure(name)
		if f == nil || f.Points == 0 {
			t.Fatalf("no %s plot with data; notes %q", name, rep.Notes)
		}
		checkPNG(t, *f)
	}
	html, err := os.ReadFile(rep.Out)
	if err != nil {
		t.Fatal(err)
	}
	if len(html) != rep.Bytes || rep.Bytes > 2<<20 {
		t.Fatalf("report %d bytes (on disk %d)", rep.Bytes, len(html))
	}
	for _, want := range []string{`id="fig-sparsity"`, `data:image/png;base64,`, `id="encodings"`, `id="kernels"`, "test accuracy", "teacher test accuracy"} {
		if !bytes.Contains(html, []byte(want)) {
			t.Fatalf("report lacks %q", want)
		}
	}
	if strings.Contains(string(html), "http://") || strings.Contains(string(html), "https://") {
		t.Fatal("the report refers to something outside itself")
	}
	// The sparsity plot draws the prune block's schedule: its points are the
	// layers', the total's and the target's.
	if got, layers := rep.Figure("sparsity").Points, 3*3; got < layers+3+400 {
		t.Fatalf("sparsity plot has %d points", got)
	}
}

// A run killed mid-epoch — metrics.csv cut mid-row, no summary, no model
// file — still renders what exists.
func TestReportOfAKilledRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	train(t, dir)
	for _, f := range []string{rundir.SummaryFile, rundir.ModelFile} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	metrics := filepath.Join(dir, rundir.MetricsFile)
	b, _ := os.ReadFile(metrics)
	os.WriteFile(metrics, b[:len(b)-len(b)/6], 0o644) // into the last row
	rep, err := Write(dir, Options{Out: filepath.Join(t.TempDir(), "r.html")})
	if err != nil {
		t.Fatal(err)
	}
	if f := rep.Figure("loss"); f == nil || f.Points != 2*3 { // two rows left, three curves (train, validation, distillation)
		t.Fatalf("loss plot: %v", f != nil && f.Points > 0)
	}
	if rep.Figure("model-bytes") != nil {
		t.Fatal("a model-bytes plot without a model file")
	}
	notes := strings.Join(rep.Notes, "\n")
	if !strings.Contains(notes, "mid-row") || !strings.Contains(notes, "model.arrow") {
		t.Fatalf("notes %q", notes)
	}
}

func TestReportOfASweep(t *testing.T) {
	recipe := filepath.Join(t.TempDir(), "r.hcl")
	os.WriteFile(recipe, []byte(`variable "target" {
  default = 0.5
}
job "sweep" {
  epochs     = 1
  batch      = 100
  validation = 55000
  model {
    arch   = "mlp"
    hidden = [32]
  }
  prune "magnitude" {
    layers = ["fc1"]
    target = var.target
  }
}
`), 0o644)
	dir := filepath.Join(t.TempDir(), "sweep")
	sv, _ := run.ParseSweep("target=0.3,0.9")
	if _, err := run.Sweep(context.Background(), recipe, nil, []run.SweepVar{sv}, dir, run.Options{Threads: 2}); err != nil {
		t.Fatal(err)
	}
	rep, err := Write(dir, Options{Runtime: true, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"pareto-size", "pareto-latency"} {
		if f := rep.Figure(name); f == nil || f.Points < 2 {
			t.Fatalf("%s: %+v; notes %q", name, f, rep.Notes)
		}
	}
}

func TestMissingRunDirectory(t *testing.T) {
	if _, err := Write(filepath.Join(t.TempDir(), "nope"), Options{}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("error %v", err)
	}
}
