package trainer

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	G "gorgonia.org/gorgonia"

	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/schedule"
)

// TestHeadPruning prunes half the heads of each attention layer of a
// two-block transformer: a pruned head's rows of q, k, v (and their
// biases) and its columns of o are gone — the weakest heads, by the norm
// of those weights — and no other weight is; thinning then rebuilds the
// layers with half the heads (projections half as wide), and the thinned
// model's logits equal the masked model's.
func TestHeadPruning(t *testing.T) {
	for _, lm := range []bool{false, true} { // a classifier, a language model
		testHeadPruning(t, lm)
	}
}

func testHeadPruning(t *testing.T, lm bool) {
	net, err := graph.Transformer(graph.Shape{H: 1, W: 12, C: 1}, graph.TransformerShape{Dim: 16, Heads: 4, Blocks: 2, MLP: 24}, 3, lm)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.FromNetwork(net, "uniform", 5)
	m.Input.PerPosition = lm
	if err != nil {
		t.Fatal(err)
	}
	// Heads 1 and 2 of b1, 0 and 3 of b2 the weakest: scaled down.
	weak := map[string][]int{"b1.attn": {1, 2}, "b2.attn": {0, 3}}
	for layer, heads := range weak {
		for _, h := range heads {
			for _, part := range []string{".q", ".k", ".v"} {
				w := m.Param(layer + part).Data()
				for j := h * 4 * 16; j < (h+1)*4*16; j++ {
					w[j] *= 0.01
				}
			}
		}
	}
	s := &State{Model: m, Batch: 8, Masks: make([][]byte, len(m.Params))}
	for _, p := range m.Params {
		s.Params = append(s.Params, p.Data())
	}
	pol := &PrunePolicy{Label: "h", Layers: []string{"b1.attn", "b2.attn"}, Granularity: compress.Heads,
		Norm: compress.L2, Schedule: schedule.Sparsity{Kind: "one_shot", Final: 0.5, Start: 0, End: 0, Every: 1}}
	if err := pol.BeforeStep(s); err != nil {
		t.Fatal(err)
	}
	for i, p := range m.Params {
		for j, v := range p.Data() {
			if s.Masks[i] != nil && s.Masks[i][j] == 0 && v != 0 {
				t.Fatalf("%s[%d] masked but %v", p.Name, j, v)
			}
		}
		layer, part := p.Layer, p.Name[len(p.Layer):]
		if _, ok := weak[layer]; !ok || part == ".o.bias" {
			if slices.Contains(s.Masks[i], 0) {
				t.Fatalf("%s lost weights", p.Name)
			}
			continue
		}
		for j, v := range p.Data() {
			head := j / (len(p.Data()) / 16) / 4 // a row of q, k, v or their bias
			if part == ".o" {
				head = j % 16 / 4
			}
			if gone := slices.Contains(weak[layer], head); gone != (v == 0) {
				t.Fatalf("%s[%d] (head %d) is %v", p.Name, j, head, v)
			}
		}
	}
	small, rep, err := m.ThinGroups()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"b1.attn", "b2.attn"} {
		if l := small.Net.Layer(name); l.Heads != 2 || l.Inner() != 8 || !slices.Equal(small.Param(name+".o").Shape, []int{16, 8}) {
			t.Fatalf("thinned %s: %d heads, width %d, o %v (report %+v)", name, l.Heads, l.Inner(), small.Param(name+".o").Shape, rep)
		}
	}
	if small.NumParams() >= m.NumParams() {
		t.Fatalf("thinned to %d of %d parameters", small.NumParams(), m.NumParams())
	}
	x := make([]float32, 4*12)
	r := rand.New(rand.NewPCG(1, 1))
	for i := range x {
		x[i] = float32(r.IntN(256)) / 255
	}
	if small.Net.PerPosition != lm {
		t.Fatalf("thinning made a per-position network %v", small.Net.PerPosition)
	}
	want, got := logits(t, m, x, 4), logits(t, small, x, 4)
	for i := range want {
		if math.Abs(float64(want[i]-got[i])) > 1e-5*max(1, math.Abs(float64(want[i]))) {
			t.Fatalf("logit %d: thinned %v, masked %v", i, got[i], want[i])
		}
	}
}

// logits runs x through m's evaluation graph.
func logits(t *testing.T, m *model.Model, x []float32, batch int) []float32 {
	t.Helper()
	eng := cpu.New(cpu.Options{Threads: 2})
	net, err := m.Build(eng, batch, false, 0, model.Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	copy(net.XValue.Float32s(), x)
	vm := G.NewTapeMachine(net.Graph, G.WithEngine(eng))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	return slices.Clone(net.Logits.Value().Data().([]float32))
}
