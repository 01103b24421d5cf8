package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/lathe-ml/lathe/graph"
)

// randomNorms gives every batch norm of m a scale, shift and running
// statistics away from their initial values (as a trained network has).
func randomNorms(m *Model, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 1))
	for _, p := range append(slices.Clone(m.Params), m.Buffers...) {
		if !p.Norm {
			continue
		}
		for i := range p.Data() {
			switch {
			case p.Bias:
				p.Data()[i] = float32(r.NormFloat64() * 0.2)
			case len(p.Name) > 4 && p.Name[len(p.Name)-4:] == "_var":
				p.Data()[i] = 0.2 + r.Float32()
			case len(p.Name) > 5 && p.Name[len(p.Name)-5:] == "_mean":
				p.Data()[i] = float32(r.NormFloat64() * 0.3)
			default:
				p.Data()[i] = 0.5 + r.Float32()
			}
		}
	}
}

// TestFoldGradientsMatchFiniteDifferences checks the gradients of a
// network training with its first batch norm folded into the convolution
// before it, with batch statistics and with frozen ones.
func TestFoldGradientsMatchFiniteDifferences(t *testing.T) {
	for _, frozen := range []bool{false, true} {
		m, err := FromNetwork(cnnNet(), "kaiming", 5)
		if err != nil {
			t.Fatal(err)
		}
		m.Fold = m.Net.FoldPairs()
		if !maps1(m.Fold, "a", "abn") {
			t.Fatalf("fold pairs %v, want a → abn only", m.Fold)
		}
		randomNorms(m, 2) // (3 puts an activation within the finite step of a kink)
		m.BN = &BNControl{Frozen: frozen}
		mean := slices.Clone(m.Buffer("abn.running_mean").Data())
		net, grads, vm := gradNet(t, m, 3)
		feed(net, 11, 3)
		checkGradients(t, m, net, grads, vm, 8, 1e-3, 6)
		if moved := !slices.Equal(mean, m.Buffer("abn.running_mean").Data()); moved == frozen {
			t.Errorf("frozen %v: the running mean moved: %v", frozen, moved)
		}
	}
}

func maps1(m map[string]string, k, v string) bool { return len(m) == 1 && m[k] == v }

// TestFoldBatchNormsKeepsOutputs: in evaluation, a ResNet-8 training with
// its batch norms folded, the same network unfolded, and the network
// FoldBatchNorms makes (every batch norm gone into its convolution, the
// residual additions reading the convolutions) compute the same logits —
// a pruned channel (γ = 0) included.
func TestFoldBatchNormsKeepsOutputs(t *testing.T) {
	n, err := graph.ResNet(graph.Shape{H: 12, W: 12, C: 1}, 8, 5)
	if err != nil {
		t.Fatal(err)
	}
	m, err := FromNetwork(n, "kaiming", 2)
	if err != nil {
		t.Fatal(err)
	}
	randomNorms(m, 4)
	// A pruned channel: the stem's filter 3 and its batch norm's scale and
	// shift zero (the fold's s is 0 there).
	m.Param("bn1").Data()[3], m.Param("bn1.bias").Data()[3] = 0, 0
	clear(m.Param("conv1").Data()[3*9 : 4*9])
	batch := 3
	r := rand.New(rand.NewPCG(7, 7))
	x := make([]float32, batch*n.Input.Size())
	for i := range x {
		x[i] = r.Float32()
	}
	plain := logits(t, m, x, batch)
	m.Fold = m.Net.FoldPairs()
	if len(m.Fold) != 9 { // stem, two per block, two projection shortcuts
		t.Fatalf("fold pairs %v", m.Fold)
	}
	folding := logits(t, m, x, batch)
	fm, err := m.FoldBatchNorms()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range fm.Net.Layers {
		if l.Kind == graph.BatchNorm {
			t.Fatalf("batch norm %s left in the folded network", l.Name)
		}
	}
	if l := fm.Net.Layer("block2.add"); !slices.Equal(l.Inputs, []string{"block2.conv2", "block2.sc"}) {
		t.Fatalf("the folded addition reads %v", l.Inputs)
	}
	if l := fm.Net.Layer("conv1"); l.NoBias || l.Act != graph.ReLU {
		t.Fatalf("folded stem %+v", l)
	}
	folded := logits(t, fm, x, batch)
	for i := range plain {
		if !(math.Abs(float64(plain[i]-folding[i])) <= 1e-4 && math.Abs(float64(plain[i]-folded[i])) <= 1e-4) { // (NaN fails)
			t.Fatalf("logit %d: unfolded %v, folding %v, folded %v", i, plain[i], folding[i], folded[i])
		}
	}
	// Thinned first (as a run's end does: block 1's inner channel 5
	// pruned), then folded: the same logits again, from a smaller network.
	m.Param("block1.bn1").Data()[5], m.Param("block1.bn1.bias").Data()[5] = 0, 0
	clear(m.Param("block1.conv1").Data()[5*9*16 : 6*9*16])
	pruned := logits(t, m, x, batch)
	small, _, err := m.ThinGroups()
	if err != nil {
		t.Fatal(err)
	}
	sf, err := small.FoldBatchNorms()
	if err != nil {
		t.Fatal(err)
	}
	if got := sf.Param("block1.conv2").Shape; got[3] != 15 {
		t.Fatalf("thinned block 1 reads %v", got)
	}
	for i, v := range logits(t, sf, x, batch) {
		if !(math.Abs(float64(v-pruned[i])) <= 1e-4) {
			t.Fatalf("thinned and folded: logit %d is %v, want %v", i, v, pruned[i])
		}
	}
	// Training on batch statistics, the pruned channel stays finite.
	tn, grads, vm := gradNet(t, m, batch)
	feed(tn, 5, 5)
	if loss := lossOf(t, tn, vm); math.IsNaN(loss) || math.IsInf(loss, 0) {
		t.Fatalf("training loss %v with a pruned channel", loss)
	}
	for _, g := range grads {
		for _, v := range data(g.Value()) {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("gradient %s holds %v", g.Name(), v)
			}
		}
	}
}
