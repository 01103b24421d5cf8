package run

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/compute/host"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/recipes"
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
	b, err := os.ReadFile(filepath.Join(run, "model.arrow"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := checkpoint.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	m, err := infer.Load(f, cpu.New(cpu.Options{Threads: 2}))
	if err != nil {
		t.Fatal(err)
	}
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
		{"heads of no attention layer", "validation = 40", "validation = 40\n  prune \"structured\" {\n    granularity = \"heads\"\n    layers = [\"b1.fc*\"]\n    target = 0.5\n  }", false, `text.hcl:15,14: "b1.fc*" names no attention layer (the model's: b1.attn)`},
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
