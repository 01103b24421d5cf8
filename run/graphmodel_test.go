package run

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
)

// graphModel is a model block of layer and repeat blocks: a stem, two
// repetitions of a residual pair of 3×3 convolutions, pooling, fc.
const graphModel = `  model {
    arch = "graph"
    layer "stem" {
      kind   = "conv"
      out    = 8
      kernel = 3
      stride = 2
      pad    = 1
      act    = "relu"
    }
    repeat "res" {
      count = 2
      layer "a" {
        kind   = "conv"
        out    = 8
        kernel = 3
        pad    = 1
        act    = "relu"
      }
      layer "b" {
        kind   = "conv"
        out    = 8
        kernel = 3
        pad    = 1
      }
      layer "sum" {
        kind   = "add"
        inputs = ["b", "in"]
        act    = "relu"
      }
    }
    layer "pool" {
      kind   = "maxpool"
      inputs = ["res"]
    }
    layer "fc" {
      kind = "linear"
      in   = 392
      out  = 10
    }
  }`

// graphRecipe is the test recipe with the graph model instead of its MLP;
// edit rewrites the model block first.
func graphRecipe(edit func(string) string) string {
	m := graphModel
	if edit != nil {
		m = edit(m)
	}
	return strings.Replace(recipe, "  model {\n    arch   = \"mlp\"\n    hidden = [32]\n  }", m, 1)
}

// TestGraphModelRecipe: a network written as layer and repeat blocks
// trains, its model file runs in the runtime, and its resolved recipe
// keeps the repeat; shape mistakes are refused at the layer block's line
// — in a repetition, at the repeated block's.
func TestGraphModelRecipe(t *testing.T) {
	j, err := recipes.Parse([]byte(graphRecipe(nil)), "graph.hcl", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sum, err := Execute(context.Background(), j, Options{RunDir: dir, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("test accuracy %.3f", sum.TestAccuracy)
	f, err := checkpoint.Read(filepath.Join(dir, rundir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	m, err := infer.Load(f, cpu.New(cpu.Options{Threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, l := range m.Layers {
		names = append(names, l.Name)
	}
	want := "stem res.1.a res.1.b res.1.sum res.2.a res.2.b res.2.sum pool fc"
	if got := strings.Join(names, " "); got != want || sum.TestAccuracy < 0.8 {
		t.Fatalf("layers %q (want %q), accuracy %.3f", got, want, sum.TestAccuracy)
	}
	resolved, err := os.ReadFile(filepath.Join(dir, rundir.RecipeFile))
	if err != nil || !strings.Contains(string(resolved), `repeat "res"`) {
		t.Fatalf("resolved recipe: %v\n%s", err, resolved)
	}
	for _, tc := range []struct {
		edit func(string) string
		want string
	}{
		{func(s string) string { return strings.Replace(s, "in   = 392", "in   = 390", 1) }, "graph.hcl:49,5: layer fc receives 392 channels"},
		{func(s string) string {
			return strings.Replace(s, "        out    = 8\n        kernel = 3\n        pad    = 1\n      }", "        out    = 6\n        kernel = 3\n        pad    = 1\n      }", 1)
		},
			"graph.hcl:39,7: graph: layer res.1.sum receives {14 14 6}, but {14 14 8} comes in from stem"},
		{func(s string) string { return strings.Replace(s, `inputs = ["b", "in"]`, `inputs = ["b", "c"]`, 1) }, `graph.hcl:39,7: graph: layer res.1.sum takes "c"`},
		{func(s string) string { return strings.Replace(s, `layer "b" {`, `layer "in" {`, 1) }, `graph.hcl:33,13: invalid name; a layer in a repeat block cannot be named "in"`},
		{func(s string) string { return strings.Replace(s, `arch = "graph"`, `arch = "mlp"`, 1) }, `graph.hcl:16,5: unexpected layers`},
	} {
		j, err := recipes.Parse([]byte(graphRecipe(tc.edit)), "graph.hcl", nil)
		if err == nil {
			_, err = Build(j, trainOf(j, 10000), nil)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}

// trainOf is an image set's Info whose training split, after job's
// validation, holds n samples.
func trainOf(job *recipes.Job, n int) data.Info {
	return data.Info{Rows: 28, Cols: 28, Classes: 10, Train: n + job.Validation}
}
