package run

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/compute/host"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
)

// textRecipe trains a small transformer on the text folder next to it.
const textRecipe = `variable "epochs" {
  default = 3
}
variable "batch" {
  default = 16
}
job "tiny-text" {
  dataset    = "text"
  data_dir   = "texts"
  epochs     = var.epochs
  batch      = var.batch
  validation = 40
  model {
    arch   = "transformer"
    dim    = 16
    heads  = 2
    blocks = 1
    mlp    = 32
  }
  optimizer "adamw" {
    lr        = 3e-3
    clip_norm = 1
    no_decay  = ["bias", "norm", "embedding"]
  }
}
`

// writeTexts writes three classes of made-up words over disjoint
// alphabets (each paragraph a document) into dir/texts, and the recipe
// into dir.
func writeTexts(t *testing.T, dir, recipe string) string {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	texts := filepath.Join(dir, "texts")
	if err := os.MkdirAll(texts, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, letters string }{{"abc", "abcdefg"}, {"mno", "mnopqrs"}, {"uvw", "tuvwxyz"}} {
		var b strings.Builder
		for range 120 {
			for range 12 + r.IntN(12) {
				for range 2 + r.IntN(6) {
					b.WriteByte(c.letters[r.IntN(len(c.letters))])
				}
				b.WriteByte(' ')
			}
			b.WriteString("\n\n")
		}
		if err := os.WriteFile(filepath.Join(texts, c.name+".txt"), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "text.hcl")
	if err := os.WriteFile(path, []byte(recipe), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTextRun trains a transformer on a folder of text files (the data
// folder relative to the recipe), then checks the summary's metrics and
// that the model file runs in the inference runtime with the accuracy
// training measured.
func TestTextRun(t *testing.T) {
	dir := t.TempDir()
	j, err := recipes.Load(writeTexts(t, dir, textRecipe), nil)
	if err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	sum, err := Execute(context.Background(), j, Options{RunDir: run, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if sum.TestAccuracy < 0.9 || sum.MacroAccuracy < 0.9 {
		t.Fatalf("accuracy %v, macro %v on three alphabets", sum.TestAccuracy, sum.MacroAccuracy)
	}
	if got := fmt.Sprint(sum.ClassNames); got != "[abc mno uvw]" || len(sum.Confusion) != 3 {
		t.Fatalf("class names %s, confusion %v", got, sum.Confusion)
	}
	m := loadRuntime(t, filepath.Join(run, "model.arrow"))
	_, test, err := data.Load("text", filepath.Join(dir, "texts"))
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, test.Len()*test.Features())
	idx := make([]int, test.Len())
	for i := range idx {
		idx[i] = i
	}
	(&data.Batcher{Set: test}).Fill(x, make([]float32, test.Len()), idx, 0)
	logits, err := m.Forward(x, test.Len())
	if err != nil {
		t.Fatal(err)
	}
	correct := 0
	for i, y := range test.Labels {
		row := logits[i*3 : i*3+3]
		arg := 0
		for k, v := range row {
			if v > row[arg] {
				arg = k
			}
		}
		if arg == int(y) {
			correct++
		}
	}
	if got := float64(correct) / float64(test.Len()); got != sum.TestAccuracy {
		t.Fatalf("runtime accuracy %v, training's %v", got, sum.TestAccuracy)
	}
	if _, err := m.Sample(nil, 5, 1, 1); err == nil || !strings.Contains(err.Error(), "language model") {
		t.Fatalf("sampling from a classifier: %v", err)
	}
}

// TestTransformerHint distils a wider transformer (width 24) into a
// narrower one (16) with a hint on the first block's output — the
// residual stream, a vector per position, projected alike at every
// position — and class-balanced weights on both loss terms: the
// projection [16, 24] learns, the distillation term falls, and a layer
// that is no hidden state is refused naming those that are.
func TestTransformerHint(t *testing.T) {
	dir := t.TempDir()
	block := `validation = 40
  class_balance = true
  teacher {
    arch   = "transformer"
    dim    = 24
    heads  = 2
    blocks = 1
    mlp    = 48
    epochs = 2
  }
  distill {
    temperature = 2
    hint {
      teacher = "b1.add2"
      student = "STUDENT"
      weight  = 0.1
    }
  }`
	src := strings.Replace(textRecipe, "validation = 40", block, 1)
	path := writeTexts(t, dir, strings.Replace(src, "STUDENT", "b1.add2", 1))
	j, err := recipes.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	sum, err := Execute(context.Background(), j, Options{RunDir: run, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	names, _ := rundir.CheckpointFiles(filepath.Join(run, rundir.CheckpointDir))
	f, err := checkpoint.Read(filepath.Join(run, rundir.CheckpointDir, names[len(names)-1]))
	if err != nil {
		t.Fatal(err)
	}
	p := f.Tensor("hint/projection")
	if p == nil || len(p.Data) != 16*24 || slices.Max(p.Data) == 0 {
		t.Fatalf("hint projection %v", p)
	}
	h := sum.History
	if sum.TestAccuracy < 0.9 || h[len(h)-1].DistillLoss >= h[0].DistillLoss {
		t.Fatalf("accuracy %v, distillation terms %v then %v", sum.TestAccuracy, h[0].DistillLoss, h[len(h)-1].DistillLoss)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(src, "STUDENT", "pool", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if j, err = recipes.Load(path, nil); err != nil {
		t.Fatal(err)
	}
	_, err = Execute(context.Background(), j, Options{RunDir: filepath.Join(dir, "bad")})
	want := `the student (transformer) has no hidden layer "pool" (it has b1.ln1, b1.attn, b1.add1, b1.ln2, b1.fc1, b1.fc2, b1.add2, ln)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("hint on the pooling: %v, want %q", err, want)
	}
}

// loadRuntime loads a run's model file into the inference runtime.
func loadRuntime(t *testing.T, path string) *infer.Model {
	t.Helper()
	f, err := checkpoint.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := infer.Load(f, cpu.New(cpu.Options{Threads: 2}))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestTextRecipesRefuse: what a text run cannot do is an error naming the
// recipe's line.
func TestTextRecipesRefuse(t *testing.T) {
	dir := t.TempDir()
	path := writeTexts(t, dir, textRecipe)
	dev := host.New(cpu.New(cpu.Options{Threads: 1}))
	defer dev.Close()
	graphModel := `model {
    arch = "graph"
    layer "emb" {
      kind = "embedding"
      out  = 8
    }
    layer "attn" {
      kind  = "attention"
      heads = 2
    }
    layer "pool" {
      kind = "global_avgpool"
    }
    layer "fc" {
      kind = "linear"
      out  = 3
    }
  }`
	for _, tc := range []struct {
		name, from, to string
		device         bool
		want           string
	}{
		{"augment", `validation = 40`, "validation = 40\n  augment {\n    shift = 2\n  }", false, "text.hcl:13,3: augment shifts and flips images; dataset text is text"},
		{"no folder", `  data_dir   = "texts"`, "", false, "text.hcl:8,16: data: dataset text reads a folder"},
		{"langid folder", `dataset    = "text"`, `dataset    = "langid"`, false, "text.hcl:8,16: data: dataset langid reads the installed fortune packages"},
		{"image model", "arch   = \"transformer\"\n    dim    = 16\n    heads  = 2\n    blocks = 1\n    mlp    = 32", `arch = "lenet5"`, false, "text.hcl:14,12: "},
		{"activation quantization", "validation = 40", "validation = 40\n  quantize {\n    layers = [\"*\"]\n    activations = 8\n  }", false, "text.hcl:15,19: activations are quantized unsigned"},
		{"heads of no attention layer", "validation = 40", "validation = 40\n  prune \"structured\" {\n    granularity = \"heads\"\n    layers = [\"b1.fc*\"]\n    target = 0.5\n  }", false, `text.hcl:15,14: "b1.fc*" names no attention layer (the model's: b1.attn)`},
		{"class balance on the device", "validation = 40", "validation = 40\n  class_balance = true", true, "text.hcl:13,19: class-balanced training is not supported on the cpu device"},
		{"device", ``, ``, true, "text.hcl:14,14: model \"transformer\" (trainer: layer 0 (emb): the device path has no embedding layer) is not supported on the cpu device"},
		{"device graph", textRecipe[strings.Index(textRecipe, "model {"):strings.Index(textRecipe, "  optimizer")], graphModel + "\n", true, "text.hcl:15,5: model \"\" (trainer: layer 0 (emb): the device path has no embedding layer)"},
	} {
		src := strings.Replace(textRecipe, tc.from, tc.to, 1)
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		j, err := recipes.Load(path, nil)
		if err == nil {
			opts := Options{RunDir: filepath.Join(dir, "run-"+strings.ReplaceAll(tc.name, " ", "-"))}
			if tc.device {
				opts.Device = dev
			}
			_, err = Execute(context.Background(), j, opts)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

// writeCorpus writes a made-up corpus (sentences of a small grammar) to
// dir/corpus.txt and returns its path.
func writeCorpus(t *testing.T, dir string) string {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	nouns, verbs := []string{"cat", "dog", "bird", "king", "lamb"}, []string{"sat on", "saw", "fed", "went to"}
	var b strings.Builder
	for b.Len() < 60000 {
		fmt.Fprintf(&b, "the %s %s the %s.\n", nouns[r.IntN(len(nouns))], verbs[r.IntN(len(verbs))], nouns[r.IntN(len(nouns))])
	}
	path := filepath.Join(dir, "corpus.txt")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLanguageModelRun trains a causal transformer on one text file (a
// corpus: 80 % training, a tenth validation, a tenth test, windows of 128
// bytes labelled with the next byte at every position) and checks the
// summary's bits per character — far below the 8 of a uniform guess —, the
// metrics' val_bpc column, and that the model file's logits in the runtime
// give the test loss training measured.
func TestLanguageModelRun(t *testing.T) {
	dir := t.TempDir()
	corpus := writeCorpus(t, dir)
	src := strings.NewReplacer(`data_dir   = "texts"`, `data_dir   = "corpus.txt"`, "  validation = 40\n", "", "default = 3", "default = 10", "lr        = 3e-3", "lr        = 1e-2").Replace(textRecipe)
	path := filepath.Join(dir, "lm.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	j, err := recipes.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	sum, err := Execute(context.Background(), j, Options{RunDir: run, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if sum.TestBPC == nil || sum.ValBPC == nil || *sum.TestBPC > 3 || math.Abs(*sum.TestBPC-sum.TestLoss/math.Ln2) > 1e-9 {
		t.Fatalf("test bpc %v, val bpc %v, test loss %v", sum.TestBPC, sum.ValBPC, sum.TestLoss)
	}
	if sum.PerClassRecall != nil || sum.Confusion != nil {
		t.Fatal("a language model's summary has per-class figures")
	}
	csv, err := os.ReadFile(filepath.Join(run, "metrics.csv"))
	if err != nil || !strings.Contains(strings.SplitN(string(csv), "\n", 2)[0], ",val_bpc,") {
		t.Fatalf("metrics.csv header: %v %.200s", err, csv)
	}
	m := loadRuntime(t, filepath.Join(run, "model.arrow"))
	_, test, err := data.Load("text", corpus)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, test.Len()*test.Features())
	y := make([]float32, len(test.Labels))
	idx := make([]int, test.Len())
	for i := range idx {
		idx[i] = i
	}
	(&data.Batcher{Set: test}).Fill(x, y, idx, 0)
	logits, err := m.Forward(x, test.Len())
	if err != nil {
		t.Fatal(err)
	}
	var loss float64
	for i, l := range y {
		row := logits[i*256 : (i+1)*256]
		mx := slices.Max(row)
		var z float64
		for _, v := range row {
			z += math.Exp(float64(v - mx))
		}
		loss += float64(mx-row[int(l)]) + math.Log(z)
	}
	if loss /= float64(len(y)); math.Abs(loss-sum.TestLoss) > 1e-4 {
		t.Fatalf("runtime test loss %v, training's %v", loss, sum.TestLoss)
	}
	// Sampling: a pure function of the seed; the most likely bytes follow
	// the grammar.
	a, err := m.Sample([]byte("the "), 80, 0.8, 7)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := m.Sample([]byte("the "), 80, 0.8, 7); string(a) != string(b) || len(a) != 80 {
		t.Fatalf("two draws of seed 7: %q, %q", a, b)
	}
	if greedy, _ := m.Sample([]byte("the "), 60, 0, 1); !strings.Contains(string(greedy), " the ") || !strings.Contains(string(greedy), ".\n") {
		t.Fatalf("the most likely continuation: %q", greedy)
	}
}

// TestTruncateAugment: a text classifier trains with augment.truncate (its
// windows cut short at random each epoch); an image set and a language
// model refuse it, naming the block.
func TestTruncateAugment(t *testing.T) {
	dir := t.TempDir()
	path := writeTexts(t, dir, strings.Replace(textRecipe, "validation = 40", "validation = 40\n  augment {\n    truncate = 0.5\n  }", 1))
	j, err := recipes.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if j.Augment.Truncate != 0.5 {
		t.Fatalf("augment %+v", j.Augment)
	}
	sum, err := Execute(context.Background(), j, Options{RunDir: filepath.Join(dir, "run"), Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if sum.TestAccuracy < 0.5 {
		t.Errorf("truncated windows: test accuracy %v", sum.TestAccuracy)
	}
	j, err = recipes.Parse([]byte(withBlock("augment {\n    truncate = 0.5\n  }")), "tiny.hcl", nil)
	if err == nil {
		_, err = Execute(context.Background(), j, Options{RunDir: t.TempDir(), Threads: 2})
	}
	if err == nil || !strings.Contains(err.Error(), "tiny.hcl:14,3: augment.truncate cuts the windows of a text classifier") {
		t.Errorf("truncate on mnist: %v", err)
	}
}
