package trainer

import (
	"slices"
	"testing"

	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/schedule"
)

// TestDependencyGroupPruning prunes half the channels of ResNet-8's stem
// group (the stem, block 1's second convolution and their residual
// addition) and of block 2's inner group: every member loses the same
// channels — producers' filters, batch norms' scales and shifts, readers'
// input channels (block 2's convolution and shortcut included) — the
// channels ranked by their producers' filters, and in evaluation those
// channels carry exactly zero wherever they go.
func TestDependencyGroupPruning(t *testing.T) {
	m := resNet8(t)
	for _, b := range m.Buffers { // running statistics away from their start
		for i := range b.Data() {
			b.Data()[i] = 0.5 + float32(i%3)*0.25
		}
	}
	// Make the stem group's channels 0…7 the weakest: scaled down in both producers.
	for _, name := range []string{"conv1", "block1.conv2"} {
		w := m.Param(name)
		per := len(w.Data()) / w.Shape[0]
		for k := range 8 {
			for j := range per {
				w.Data()[k*per+j] *= 0.01
			}
		}
	}
	s := stateOf(m)
	pol := &PrunePolicy{Label: "g", Layers: []string{"conv1", "block1.conv2", "block2.conv1"}, Granularity: compress.DependencyGroups,
		Norm: compress.L2, Schedule: schedule.Sparsity{Kind: "one_shot", Final: 0.5, Start: 0, End: 0, Every: 1}}
	if err := pol.BeforeStep(s); err != nil {
		t.Fatal(err)
	}
	mask := func(name string) []byte {
		return s.Masks[slices.IndexFunc(m.Params, func(p *model.Param) bool { return p.Name == name })]
	}
	dropped := func(name string, axis, channels int) []int { // channels with every element masked
		shape := m.Param(name).Shape
		var out []int
		for k := range channels {
			all := true
			graph.Member{Axis: axis}.Each(shape, k, func(j int) { all = all && mask(name)[j] == 0 })
			if all {
				out = append(out, k)
			}
		}
		return out
	}
	stem := []int{0, 1, 2, 3, 4, 5, 6, 7}
	for _, c := range []struct {
		name string
		axis int
	}{{"conv1", 0}, {"block1.conv2", 0}, {"bn1", 0}, {"bn1.bias", 0}, {"block1.bn2", 0}, {"block1.bn2.bias", 0},
		{"block1.conv1", 3}, {"block2.conv1", 3}, {"block2.sc", 3}} {
		if got := dropped(c.name, c.axis, 16); !slices.Equal(got, stem) {
			t.Fatalf("%s loses channels %v, want %v", c.name, got, stem)
		}
	}
	inner := dropped("block2.conv1", 0, 32)
	if len(inner) != 16 || !slices.Equal(dropped("block2.bn1", 0, 32), inner) || !slices.Equal(dropped("block2.conv2", 3, 32), inner) {
		t.Fatalf("block 2's inner group: conv1 filters %v", inner)
	}
	if mask("block2.sc") != nil && len(dropped("block2.sc", 0, 32)) != 0 {
		t.Fatal("block 2's shortcut lost filters of another group")
	}
	// The batch norms' scales and shifts of those channels are zero, so
	// they carry exactly zero after each batch norm (γ·x̂ + β), through the
	// ReLUs and the residual addition, whatever the running statistics.
	for _, name := range []string{"bn1", "bn1.bias", "block1.bn2", "block1.bn2.bias"} {
		for _, k := range stem {
			if v := m.Param(name).Data()[k]; v != 0 {
				t.Fatalf("%s[%d] = %v after pruning", name, k, v)
			}
		}
	}
}

// TestClipAndNoDecay: gradients above the clipping norm are scaled to it
// (below it, left alone); weight decay skips the parameters flagged.
func TestClipAndNoDecay(t *testing.T) {
	g := [][]float32{{3, 0}, {4}} // norm 5
	clipGradients(g, 2.5)
	if g[0][0] != 1.5 || g[1][0] != 2 {
		t.Fatalf("clipped to %v", g)
	}
	clipGradients(g, 10)
	if g[0][0] != 1.5 {
		t.Fatalf("a gradient under the norm changed: %v", g)
	}
	o, err := NewOptimizer(OptimConfig{Kind: "sgd", WeightDecay: 0.5, NoDecay: []bool{false, true}}, []int{1, 1})
	if err != nil {
		t.Fatal(err)
	}
	w := [][]float32{{2}, {2}}
	o.Step(w, [][]float32{{0}, {0}}, nil, 1)
	if w[0][0] != 1 || w[1][0] != 2 {
		t.Fatalf("after one step of decay 0.5: %v, want [[1] [2]]", w)
	}
	o.Remap([]int{1, -1}, []int{1, 1}) // the flags follow a rebuild
	w = [][]float32{{2}, {2}}
	o.Step(w, [][]float32{{0}, {0}}, nil, 1)
	if w[0][0] != 2 || w[1][0] != 1 {
		t.Fatalf("after the rebuild: %v, want [[2] [1]]", w)
	}
}

// TestOverlappingPrunePoliciesKeepEachOthersMasks prunes ResNet-8's stem
// group (conv1, block1.conv2 and their residual addition) with one policy
// and block 1's inner group (block1.conv1's filters, block1.conv2's input
// channels) with another, each an event after the other: block1.conv2,
// a member of both groups, keeps both policies' removals — its output
// channels of the stem group and its input channels of the inner one —
// whichever ran last.
func TestOverlappingPrunePoliciesKeepEachOthersMasks(t *testing.T) {
	m := resNet8(t)
	s := stateOf(m)
	stem := &PrunePolicy{Label: "stem", Layers: []string{"conv1"}, Granularity: compress.DependencyGroups,
		Norm: compress.L2, Schedule: schedule.Sparsity{Kind: "one_shot", Final: 0.25, Start: 0, End: 0, Every: 1}}
	inner := &PrunePolicy{Label: "inner", Layers: []string{"block1.conv1"}, Granularity: compress.DependencyGroups,
		Norm: compress.L2, Schedule: schedule.Sparsity{Kind: "one_shot", Final: 0.75, Start: 0, End: 0, Every: 1}}
	for _, pol := range []*PrunePolicy{stem, inner} {
		if err := pol.BeforeStep(s); err != nil {
			t.Fatal(err)
		}
	}
	i := slices.IndexFunc(m.Params, func(p *model.Param) bool { return p.Name == "block1.conv2" })
	shape := m.Params[i].Shape
	count := func(axis int) int { // channels along axis with every element masked
		n := 0
		for k := range shape[axis] {
			all := true
			graph.Member{Axis: axis}.Each(shape, k, func(j int) { all = all && s.Masks[i][j] == 0 })
			if all {
				n++
			}
		}
		return n
	}
	if out, in := count(0), count(3); out != 4 || in != 12 {
		t.Fatalf("block1.conv2 has %d output channels (stem group, want 4) and %d input channels (inner group, want 12) masked", out, in)
	}
}

// resNet8 is a Kaiming-initialised ResNet-8 for 28×28 single-channel
// inputs.
func resNet8(t *testing.T) *model.Model {
	t.Helper()
	net, err := graph.ResNet(graph.Shape{H: 28, W: 28, C: 1}, 8, 10)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.FromNetwork(net, "kaiming", 3)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// stateOf is a training state over m's parameters, without masks.
func stateOf(m *model.Model) *State {
	s := &State{Model: m, Batch: 8, Masks: make([][]byte, len(m.Params))}
	for _, p := range m.Params {
		s.Params = append(s.Params, p.Data())
	}
	return s
}
