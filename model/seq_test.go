package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/graph"
)

// seqNet is a small transformer classifier over 6 positions of an 8-token
// vocabulary: every sequence kind, GELU, residual additions and mean
// pooling; causal attention when asked, its projections narrower (6) than
// the width (8), as after pruning a head.
func seqNet(t *testing.T, causal bool) graph.Network {
	t.Helper()
	net, err := graph.Transformer(graph.Shape{H: 1, W: 6, C: 1}, graph.TransformerShape{Dim: 8, Heads: 2, Blocks: 1, MLP: 12}, 3, false)
	if err != nil {
		t.Fatal(err)
	}
	for i := range net.Layers {
		switch net.Layers[i].Kind {
		case graph.Embedding:
			net.Layers[i].Vocab = 8
		case graph.Attention:
			net.Layers[i].Causal, net.Layers[i].Out = causal, 6
		}
	}
	if err := net.Validate(); err != nil {
		t.Fatal(err)
	}
	return net
}

// offIdentity moves the norms and the zero-started parameters (positions)
// of m off their start, by normal noise of deviation 0.3 drawn from seed.
func offIdentity(m *Model, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed))
	for _, p := range m.Params {
		if p.Norm || p.Zero {
			for i := range p.Data() {
				p.Data()[i] += float32(0.3 * r.NormFloat64())
			}
		}
	}
}

// feedTokens fills a graph's input with token ids below vocab (as the
// input bytes' scaling, id/255) and its labels with classes.
func feedTokens(net *Net, seed uint64, vocab, classes int) {
	r := rand.New(rand.NewPCG(seed, 0))
	for i := range net.XValue.Float32s() {
		net.XValue.Float32s()[i] = float32(r.IntN(vocab)) / 255
	}
	for i := range net.YValue.Float32s() {
		net.YValue.Float32s()[i] = float32(r.IntN(classes))
	}
}

// TestTransformerGradientsMatchFiniteDifferences checks every parameter's
// analytic gradient through embedding, LayerNorm, attention (causal and
// not), GELU and the residual stream against central differences of the
// loss.
func TestTransformerGradientsMatchFiniteDifferences(t *testing.T) {
	for _, causal := range []bool{false, true} {
		m, err := FromNetwork(seqNet(t, causal), "uniform", 7)
		if err != nil {
			t.Fatal(err)
		}
		// Move the norms off the identity so that their gradients are
		// exercised in general position.
		offIdentity(m, 3)
		net, grads, vm := gradNet(t, m, 4)
		feedTokens(net, 9, 8, 3)
		checkGradients(t, m, net, grads, vm, 10, 1e-2, 5)
	}
}

// TestAttentionMatchesDirect compares the attention op's output and its
// gradients (input and every weight) with a direct float64 definition: the
// forward pass written as loops, its gradients by central differences of
// that definition.
func TestAttentionMatchesDirect(t *testing.T) {
	const n, T, d, e, heads = 2, 5, 6, 4, 2
	for _, mode := range []struct{ causal, pad bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		causal := mode.causal
		// Skipping padding: the first sample's ids end in two zero bytes
		// (length 3), the second's hold a zero inside (length 4).
		var lens []int
		ids := []float32{7, 9, 4, 0, 0, 0, 5, 0, 3, 0}
		if mode.pad {
			lens = []int{3, 4}
		}
		r := rand.New(rand.NewPCG(11, 2))
		randn := func(size int) []float32 {
			v := make([]float32, size)
			for i := range v {
				v[i] = float32(r.NormFloat64() * 0.7)
			}
			return v
		}
		ins := [][]float32{randn(n * T * d)}
		for range 3 {
			ins = append(ins, randn(e*d), randn(e))
		}
		ins = append(ins, randn(d*e), randn(d))
		probe := randn(n * T * d) // the loss is Σ y·probe
		eng := cpu.New(cpu.Options{Threads: 2})
		g := G.NewGraph()
		var nodes G.Nodes
		for i, v := range ins {
			shape := map[int][]int{0: {n, T * d}, 7: {d, e}, 8: {d}}[i]
			switch {
			case shape != nil:
			case i%2 == 1:
				shape = []int{e, d}
			default:
				shape = []int{e}
			}
			nodes = append(nodes, G.NewTensor(g, tensor.Float32, len(shape), G.WithShape(shape...), G.WithName(string(rune('a'+i))),
				G.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v)))))
		}
		op, args := newAttention("attn", eng, T, heads, causal, true), nodes
		if mode.pad {
			idn := G.NewMatrix(g, tensor.Float32, G.WithShape(n, T), G.WithName("ids"), G.WithValue(tensor.New(tensor.WithShape(n, T), tensor.WithBacking(ids))))
			op.skipPadding, args = true, append(slices.Clone(nodes), idn)
		}
		y, err := G.ApplyOp(op, args...)
		if err != nil {
			t.Fatal(err)
		}
		pn := G.NewMatrix(g, tensor.Float32, G.WithShape(n, T*d), G.WithValue(tensor.New(tensor.WithShape(n, T*d), tensor.WithBacking(probe))))
		prod, err := G.HadamardProd(y, pn)
		if err != nil {
			t.Fatal(err)
		}
		loss, err := G.Sum(prod)
		if err != nil {
			t.Fatal(err)
		}
		grads, err := G.Grad(loss, nodes...)
		if err != nil {
			t.Fatal(err)
		}
		vm := G.NewTapeMachine(g)
		if err := vm.RunAll(); err != nil {
			t.Fatal(err)
		}
		want := directAttention(ins, n, T, d, e, heads, causal, lens)
		for i, v := range data(y.Value()) {
			if math.Abs(float64(v)-want[i]) > 1e-5*(1+math.Abs(want[i])) {
				t.Fatalf("%+v: y[%d] = %v, direct %v", mode, i, v, want[i])
			}
		}
		lossOf := func() float64 {
			var s float64
			for i, v := range directAttention(ins, n, T, d, e, heads, causal, lens) {
				s += v * float64(probe[i])
			}
			return s
		}
		for k, gr := range grads {
			an := data(gr.Value())
			for j := range ins[k] {
				old := ins[k][j]
				// The definition in float64 around the float32 point.
				const eps = 1e-3
				ins[k][j] = old + eps
				lp := lossOf()
				ins[k][j] = old - eps
				lm := lossOf()
				ins[k][j] = old
				num := (lp - lm) / (2 * eps)
				if math.Abs(float64(an[j])-num) > 2e-3*(1+math.Abs(num)) {
					t.Errorf("%+v: input %d [%d]: analytic %g, direct %g", mode, k, j, an[j], num)
				}
			}
		}
		vm.Close()
	}
}

// directAttention is attention's definition in float64 loops (graph's
// Attention: width d, projections e), on inputs x, Wq, bq, Wk, bk, Wv, bv,
// Wo, bo; lens, when set, are the samples' lengths (keys past them skipped).
func directAttention(in [][]float32, n, T, d, e, heads int, causal bool, lens []int) []float64 {
	proj := func(w, b []float32, src []float64, width, out int) []float64 {
		y := make([]float64, n*T*out)
		for r := range n * T {
			for o := range out {
				s := float64(b[o])
				for i := range width {
					s += float64(w[o*width+i]) * src[r*width+i]
				}
				y[r*out+o] = s
			}
		}
		return y
	}
	x := make([]float64, len(in[0]))
	for i, v := range in[0] {
		x[i] = float64(v)
	}
	q, k, v := proj(in[1], in[2], x, d, e), proj(in[3], in[4], x, d, e), proj(in[5], in[6], x, d, e)
	dh := e / heads
	ctx := make([]float64, n*T*e)
	for b := range n {
		for h := range heads {
			for i := range T {
				s := make([]float64, T)
				m := math.Inf(-1)
				for j := range T {
					s[j] = math.Inf(-1)
					if causal && j > i || lens != nil && j >= lens[b] {
						continue
					}
					var dot float64
					for c := range dh {
						dot += q[(b*T+i)*e+h*dh+c] * k[(b*T+j)*e+h*dh+c]
					}
					s[j] = dot / math.Sqrt(float64(dh))
					m = max(m, s[j])
				}
				var z float64
				for j := range s {
					s[j] = math.Exp(s[j] - m)
					z += s[j]
				}
				for j := range T {
					for c := range dh {
						ctx[(b*T+i)*e+h*dh+c] += s[j] / z * v[(b*T+j)*e+h*dh+c]
					}
				}
			}
		}
	}
	return proj(in[7], in[8], ctx, e, d)
}

// TestLayerNormAndGELUMatchDefinitions checks the forward passes of
// LayerNorm and GELU against their definitions.
func TestLayerNormAndGELUMatchDefinitions(t *testing.T) {
	for _, c := range []struct{ x, want float64 }{{0, 0}, {1, 0.8413447460685429}, {-2, -0.04550026389635842}} {
		if got := gelu(float32(c.x)); math.Abs(float64(got)-c.want) > 1e-6 {
			t.Errorf("gelu(%v) = %v, want %v", c.x, got, c.want)
		}
		// The slope against the function's own central differences.
		num := (float64(gelu(float32(c.x+1e-3))) - float64(gelu(float32(c.x-1e-3)))) / 2e-3
		if got := geluSlope(float32(c.x)); math.Abs(float64(got)-num) > 1e-3 {
			t.Errorf("gelu'(%v) = %v, numeric %v", c.x, got, num)
		}
	}
	eng := cpu.New(cpu.Options{Threads: 2})
	x := []float32{1, 2, 3, 4, -1, 0, 1, 8}
	gamma, beta := []float32{1, 2, 0.5, 1}, []float32{0, 1, 0, -1}
	op := &layerNormOp{opBase: newBase("ln", eng), c: 4}
	out, err := op.Do(tensor.New(tensor.WithShape(2, 4), tensor.WithBacking(x)), tensor.New(tensor.WithShape(4), tensor.WithBacking(gamma)), tensor.New(tensor.WithShape(4), tensor.WithBacking(beta)))
	if err != nil {
		t.Fatal(err)
	}
	y := data(out)
	for r := range 2 {
		row := x[r*4 : r*4+4]
		var mu, vr float64
		for _, v := range row {
			mu += float64(v) / 4
		}
		for _, v := range row {
			vr += (float64(v) - mu) * (float64(v) - mu) / 4
		}
		for j, v := range row {
			want := (float64(v)-mu)/math.Sqrt(vr+graph.LNEpsilon)*float64(gamma[j]) + float64(beta[j])
			if math.Abs(float64(y[r*4+j])-want) > 1e-5 {
				t.Errorf("layernorm[%d][%d] = %v, want %v", r, j, y[r*4+j], want)
			}
		}
	}
}

// TestTransformerRefusesBadIDs: a token id outside the vocabulary is an
// error naming the layer, not a read out of bounds.
func TestTransformerRefusesBadIDs(t *testing.T) {
	m, err := FromNetwork(seqNet(t, false), "uniform", 1)
	if err != nil {
		t.Fatal(err)
	}
	net, _, vm := gradNet(t, m, 2)
	feedTokens(net, 1, 8, 3)
	net.XValue.Float32s()[3] = 9.0 / 255
	if err := vm.RunAll(); err == nil || !contains(err.Error(), "emb") || !contains(err.Error(), "vocabulary") {
		t.Fatalf("id 9 of a vocabulary of 8: %v", err)
	}
}

// TestClassWeightsGradients: class-balanced training's weighted
// cross-entropy (Σ w·CE / Σ w) has the gradients of its loss, and weights
// of 1 give the unweighted loss's bits.
func TestClassWeightsGradients(t *testing.T) {
	m, err := New(Spec{Arch: "mlp", Hidden: []int{7}}, Input{Rows: 1, Cols: 6, Channels: 1, Classes: 3}, 2)
	if err != nil {
		t.Fatal(err)
	}
	plain, _, vm := gradNet(t, m, 5)
	feed(plain, 4, 3)
	want := lossOf(t, plain, vm)
	m.ClassWeights = []float32{1, 1, 1}
	ones, _, vm1 := gradNet(t, m, 5)
	feed(ones, 4, 3)
	if got := lossOf(t, ones, vm1); got != want {
		t.Fatalf("weights of 1: loss %v, unweighted %v", got, want)
	}
	m.ClassWeights = []float32{0.5, 2, 3.5}
	net, grads, vm2 := gradNet(t, m, 5)
	feed(net, 4, 3)
	if got := lossOf(t, net, vm2); got == want {
		t.Fatal("the weights changed nothing")
	}
	checkGradients(t, m, net, grads, vm2, 6, 1e-2, 3)
}

// TestPoolSkipsPadding: a global pooling that skips padding averages each
// sample over its length (graph.SeqLength of its ids) and hands its
// gradient to those positions only; a sample without padding gets the
// plain pooling's bits.
func TestPoolSkipsPadding(t *testing.T) {
	const n, T, C = 2, 4, 3
	eng := cpu.New(cpu.Options{Threads: 1})
	in := graph.Shape{H: 1, W: T, C: C}
	x := make([]float32, n*T*C)
	for i := range x {
		x[i] = float32(i%7) - 2.5
	}
	ids := []float32{0.2, 0.4, 0, 0, 0.1, 0.3, 0.5, 0.7} // lengths 2 and 4
	skip := &avgPoolOp{opBase: newBase("pool", eng), l: graph.Layer{Kind: graph.GlobalAvgPool, In: in, SkipPadding: true}}
	plain := &avgPoolOp{opBase: newBase("plain", eng), l: graph.Layer{Kind: graph.GlobalAvgPool, In: in}}
	xv := tensor.New(tensor.WithShape(n, T*C), tensor.WithBacking(x))
	ys, err := skip.Do(xv, tensor.New(tensor.WithShape(n, T), tensor.WithBacking(ids)))
	if err != nil {
		t.Fatal(err)
	}
	yp, err := plain.Do(xv)
	if err != nil {
		t.Fatal(err)
	}
	got, full := slices.Clone(data(ys)), data(yp)
	for c := range C {
		want := (x[c] + x[C+c]) / 2
		if got[c] != want {
			t.Errorf("sample 0 channel %d: %v, want the mean of its 2 positions %v", c, got[c], want)
		}
		if got[C+c] != full[C+c] {
			t.Errorf("sample 1 (no padding) channel %d: %v, the plain pooling's %v", c, got[C+c], full[C+c])
		}
	}
	dy := tensor.New(tensor.WithShape(n, C), tensor.WithBacking([]float32{1, 2, 3, 4, 5, 6}))
	dx, err := (&avgPoolGradOp{opBase: newBase("g", eng), fwd: skip}).Do(dy)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range data(dx) {
		b, p, c := i/(T*C), i/C%T, i%C
		want := float32(0)
		if l := []int{2, 4}[b]; p < l {
			want = data(dy)[b*C+c] / float32(l)
		}
		if v != want {
			t.Errorf("dx sample %d position %d channel %d: %v, want %v", b, p, c, v, want)
		}
	}
}

// TestLabelSmoothingGradients: a label-smoothed cross-entropy has the
// gradients of its loss, raises the loss of a confident model, and with
// class weights still matches finite differences.
func TestLabelSmoothingGradients(t *testing.T) {
	m, err := New(Spec{Arch: "mlp", Hidden: []int{7}}, Input{Rows: 1, Cols: 6, Channels: 1, Classes: 3}, 2)
	if err != nil {
		t.Fatal(err)
	}
	plain, _, vm := gradNet(t, m, 5)
	feed(plain, 4, 3)
	want := lossOf(t, plain, vm)
	m.LabelSmoothing = 0.3
	net, grads, vm1 := gradNet(t, m, 5)
	feed(net, 4, 3)
	if got := lossOf(t, net, vm1); got == want {
		t.Fatal("smoothing changed nothing")
	}
	checkGradients(t, m, net, grads, vm1, 6, 1e-2, 3)
	m.ClassWeights = []float32{0.5, 2, 3.5}
	wnet, wgrads, vm2 := gradNet(t, m, 5)
	feed(wnet, 4, 3)
	checkGradients(t, m, wnet, wgrads, vm2, 6, 1e-2, 3)
}

// TestNgramTransformer: a transformer classifier with an ngram convolution
// over its byte embeddings has the gradients of its loss (every parameter,
// by central differences), the convolution's kernel rows that meet only
// padding start at zero and get no gradient, and the preset refuses an
// even width and a language model's convolution.
func TestNgramTransformer(t *testing.T) {
	net, err := graph.Transformer(graph.Shape{H: 1, W: 6, C: 1}, graph.TransformerShape{Dim: 8, Heads: 2, Blocks: 1, MLP: 12, Ngram: 3}, 3, false)
	if err != nil {
		t.Fatal(err)
	}
	net.Layers[0].Vocab = 8
	if net.Layers[1].Name != "ngram" || net.Layers[2].Name != "ngram.add" || !slices.Equal(net.Layers[5].Inputs, []string{"ngram.add", "b1.attn"}) {
		t.Fatalf("layers %s, %s; b1.add1 reads %v", net.Layers[1].Name, net.Layers[2].Name, net.Layers[5].Inputs)
	}
	m, err := FromNetwork(net, "uniform", 7)
	if err != nil {
		t.Fatal(err)
	}
	w := m.Param("ngram")
	row := 3 * 8 // [out, 3, 3, in]: a kernel row is 3 taps of 8 inputs
	var middle float32
	for i, v := range w.Data() {
		if r := i / row % 3; r != 1 && v != 0 {
			t.Fatalf("ngram weight %d (kernel row %d) is %v, want 0", i, r, v)
		} else if r == 1 {
			middle += v * v
		}
	}
	if middle == 0 {
		t.Fatal("the kernel's middle row is zero too")
	}
	offIdentity(m, 3)
	gn, grads, vm := gradNet(t, m, 4)
	feedTokens(gn, 9, 8, 3)
	checkGradients(t, m, gn, grads, vm, 10, 1e-2, 5)
	vm.Reset()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	for i, p := range m.Params {
		if p.Name != "ngram" {
			continue
		}
		for j, g := range data(grads[i].Value()) {
			if j/row%3 != 1 && g != 0 {
				t.Fatalf("ngram gradient %d (an off-sequence row) is %v", j, g)
			}
		}
	}
	for _, bad := range []struct {
		ngram int
		lm    bool
	}{{2, false}, {-1, false}, {3, true}} {
		if _, err := graph.Transformer(graph.Shape{H: 1, W: 6, C: 1}, graph.TransformerShape{Dim: 8, Heads: 2, Blocks: 1, MLP: 12, Ngram: bad.ngram}, 3, bad.lm); err == nil {
			t.Errorf("ngram %d (language model %v) accepted", bad.ngram, bad.lm)
		}
	}
}
