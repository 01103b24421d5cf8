package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/internal/kernels"
)

// cnnNet is a small DAG with every kind the training graph runs beyond
// the zoo's: a strided, padded, bias-free conv, a batch norm with ReLU6, a depthwise
// conv, a residual addition, a padded 3×3 max pooling, a grouped 1×1
// conv, average pooling, global average pooling and flatten.
func cnnNet() graph.Network {
	c := graph.NewChain(graph.Shape{H: 7, W: 7, C: 2}, 3)
	c.Add(graph.Layer{Name: "a", Kind: graph.Conv, Out: 4, Kernel: 3, Stride: 2, Pad: 1, NoBias: true})
	c.Add(graph.Layer{Name: "abn", Kind: graph.BatchNorm, Act: graph.ReLU6})
	c.Add(graph.Layer{Name: "b", Kind: graph.Conv, Out: 4, Kernel: 3, Pad: 1, Groups: 4, Act: graph.ReLU})
	c.Add(graph.Layer{Name: "c", Kind: graph.Add, Inputs: []string{"b", "abn"}, Act: graph.ReLU})
	c.Add(graph.Layer{Name: "d", Kind: graph.MaxPool, Kernel: 3, Stride: 1, Pad: 1})
	c.Add(graph.Layer{Name: "e", Kind: graph.Conv, Out: 6, Kernel: 1, Groups: 2, NoBias: true})
	c.Add(graph.Layer{Name: "f", Kind: graph.AvgPool})
	c.Add(graph.Layer{Name: "g", Kind: graph.GlobalAvgPool})
	c.Add(graph.Layer{Name: "h", Kind: graph.Flatten})
	c.Add(graph.Layer{Name: "fc", Kind: graph.Linear, Out: 3})
	return c.Net
}

// TestCNNGradientsMatchFiniteDifferences checks every parameter's analytic
// gradient through the DAG against central differences of the loss.
func TestCNNGradientsMatchFiniteDifferences(t *testing.T) {
	m, err := FromNetwork(cnnNet(), "kaiming", 5)
	if err != nil {
		t.Fatal(err)
	}
	if p := m.Param("a.bias"); p != nil {
		t.Fatal("a bias-free conv has a bias")
	}
	net, grads, vm := gradNet(t, m, 3)
	feed(net, 11, 3)
	checkGradients(t, m, net, grads, vm, 8, 1e-3, 6)
}

// TestSigmoidAndSiLUGradients checks the gradients through sigmoid and
// SiLU — after a convolution, a linear layer and a residual addition —
// against central differences of the loss, and their values against the
// definitions.
func TestSigmoidAndSiLUGradients(t *testing.T) {
	for _, x := range []float64{-20, -3, -0.5, 0, 0.7, 4, 30} {
		s := 1 / (1 + math.Exp(-x))
		if got := float64(kernels.Sigmoid(float32(x))); math.Abs(got-s) > 1e-6 {
			t.Errorf("sigmoid(%v) = %v, want %v", x, got, s)
		}
		y := []float32{0}
		kernels.SiLUPass(y, []float32{float32(x)}, nil)
		if math.Abs(float64(y[0])-x*s) > 1e-5*(1+math.Abs(x)) {
			t.Errorf("silu(%v) = %v, want %v", x, y[0], x*s)
		}
	}
	c := graph.NewChain(graph.Shape{H: 5, W: 5, C: 2}, 3)
	c.Add(graph.Layer{Name: "a", Kind: graph.Conv, Out: 4, Kernel: 3, Pad: 1, Act: graph.SiLU})
	c.Add(graph.Layer{Name: "b", Kind: graph.Conv, Out: 4, Kernel: 1, Act: graph.Sigmoid})
	c.Add(graph.Layer{Name: "c", Kind: graph.Add, Inputs: []string{"b", "a"}, Act: graph.SiLU})
	c.Add(graph.Layer{Name: "g", Kind: graph.GlobalAvgPool})
	c.Add(graph.Layer{Name: "h", Kind: graph.Flatten})
	c.Add(graph.Layer{Name: "fc1", Kind: graph.Linear, Out: 5, Act: graph.Sigmoid})
	c.Add(graph.Layer{Name: "fc", Kind: graph.Linear, Out: 3})
	if err := c.Net.Validate(); err != nil {
		t.Fatal(err)
	}
	m, err := FromNetwork(c.Net, "kaiming", 5)
	if err != nil {
		t.Fatal(err)
	}
	net, grads, vm := gradNet(t, m, 3)
	feed(net, 11, 3)
	checkGradients(t, m, net, grads, vm, 8, 1e-3, 6)
}

// TestConvWindowMatchesDirect compares the strided, padded, grouped
// convolution with a direct loop over its definition.
func TestConvWindowMatchesDirect(t *testing.T) {
	for _, l := range []graph.Layer{
		{Name: "s2p1", Kind: graph.Conv, In: graph.Shape{H: 7, W: 6, C: 4}, Out: 6, Kernel: 3, Stride: 2, Pad: 1},
		{Name: "groups", Kind: graph.Conv, In: graph.Shape{H: 5, W: 5, C: 4}, Out: 6, Kernel: 3, Pad: 2, Groups: 2, NoBias: true},
		{Name: "depthwise", Kind: graph.Conv, In: graph.Shape{H: 6, W: 6, C: 3}, Out: 3, Kernel: 3, Stride: 2, Pad: 1, Groups: 3},
	} {
		t.Run(l.Name, func(t *testing.T) {
			l.Act = graph.Identity
			r := rand.New(rand.NewPCG(2, 2))
			n, k, ng := 2, l.Kernel, l.GroupCount()
			cg, fg := l.In.C/ng, l.Out/ng
			x, w, b := make([]float32, n*l.In.Size()), make([]float32, l.Out*k*k*cg), make([]float32, l.Out)
			for _, s := range [][]float32{x, w, b} {
				for i := range s {
					s[i] = float32(r.NormFloat64())
				}
			}
			vals := []tensor.Tensor{dense(x, n, l.In.Size()), dense(w, l.Out, k, k, cg)}
			if !l.NoBias {
				vals = append(vals, dense(b, l.Out))
			}
			// A training op, and an evaluation op whose patch buffer holds
			// one sample at a time.
			op := newConv(cpu.New(cpu.Options{Threads: 2}), l, false, true)
			y, err := op.Do(gvals(vals)...)
			if err != nil {
				t.Fatal(err)
			}
			defer func(c int) { evalChunk = c }(evalChunk)
			evalChunk = l.Output().H * l.Output().W * k * k * cg * ng
			ev := newConv(cpu.New(cpu.Options{Threads: 2}), l, false, false)
			ye, err := ev.Do(gvals(vals)...)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(data(ye), data(y)) || (len(ev.col) != evalChunk) != (ev.depthwise() || ev.direct()) { // (depthwise, direct: no patches)
				t.Fatalf("the evaluation op (patches for %d values) computes otherwise than the training op", len(ev.col))
			}
			got, o := data(y), l.Output()
			_, s, p := l.Window()
			for bi := range n {
				for oy := range o.H {
					for ox := range o.W {
						for f := range l.Out {
							want := 0.0
							if !l.NoBias {
								want = float64(b[f])
							}
							g := f / fg
							for ky := range k {
								for kx := range k {
									iy, ix := oy*s-p+ky, ox*s-p+kx
									if iy < 0 || iy >= l.In.H || ix < 0 || ix >= l.In.W {
										continue
									}
									for c := range cg {
										want += float64(w[((f*k+ky)*k+kx)*cg+c]) * float64(x[bi*l.In.Size()+(iy*l.In.W+ix)*l.In.C+g*cg+c])
									}
								}
							}
							at := bi*o.Size() + (oy*o.W+ox)*o.C + f
							if math.Abs(float64(got[at])-want) > 1e-4 {
								t.Fatalf("sample %d (%d,%d) filter %d: %g, want %g", bi, oy, ox, f, got[at], want)
							}
						}
					}
				}
			}
		})
	}
}

// TestPoolingPadding: an average counts the padding (PyTorch's default);
// a maximum never takes it, even over negative inputs.
func TestPoolingPadding(t *testing.T) {
	eng := cpu.New(cpu.Options{Threads: 1})
	in := graph.Shape{H: 3, W: 3, C: 1}
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9}
	neg := []float32{-1, -2, -3, -4, -5, -6, -7, -8, -9}
	avg := &avgPoolOp{opBase: newBase("avg", eng), l: graph.Layer{Kind: graph.AvgPool, In: in, Kernel: 2, Stride: 1, Pad: 1}}
	y, err := avg.Do(gvals([]tensor.Tensor{dense(x, 1, 9)})...)
	if err != nil {
		t.Fatal(err)
	}
	if got := data(y); len(got) != 16 || got[0] != 0.25 || got[5] != 3 || got[15] != 9.0/4 {
		t.Fatalf("average pooling %v", got)
	}
	mx := &maxPoolOp{opBase: newBase("max", eng), l: graph.Layer{Kind: graph.MaxPool, In: in, Kernel: 2, Stride: 1, Pad: 1}}
	y, err = mx.Do(gvals([]tensor.Tensor{dense(neg, 1, 9)})...)
	if err != nil {
		t.Fatal(err)
	}
	if got := data(y); got[0] != -1 || got[5] != -1 || got[15] != -9 {
		t.Fatalf("max pooling over negatives %v", got)
	}
	gap := &avgPoolOp{opBase: newBase("gap", eng), l: graph.Layer{Kind: graph.GlobalAvgPool, In: in}}
	y, err = gap.Do(gvals([]tensor.Tensor{dense(x, 1, 9)})...)
	if err != nil {
		t.Fatal(err)
	}
	if got := data(y); len(got) != 1 || got[0] != 5 {
		t.Fatalf("global average %v", got)
	}
}

// TestBatchNorm: a training graph normalizes by the batch's statistics
// and moves the running ones toward them (momentum 0.1, unbiased
// variance); an evaluation graph normalizes by the running ones. The
// parameters start as the identity, the buffers as mean 0, variance 1.
func TestBatchNorm(t *testing.T) {
	c := graph.NewChain(graph.Shape{H: 2, W: 2, C: 2}, 8)
	c.Add(graph.Layer{Name: "bn", Kind: graph.BatchNorm})
	c.Add(graph.Layer{Name: "flat", Kind: graph.Flatten})
	m, err := FromNetwork(c.Net, "", 1)
	if err != nil {
		t.Fatal(err)
	}
	if g, b := m.Param("bn").Data(), m.Param("bn.bias").Data(); g[0] != 1 || b[0] != 0 || len(m.Weights()) != 0 || len(m.Buffers) != 2 {
		t.Fatalf("scale %v shift %v, %d weights, %d buffers", g, b, len(m.Weights()), len(m.Buffers))
	}
	m.Param("bn").Data()[1] = 2
	m.Param("bn.bias").Data()[1] = 0.5
	eng := cpu.New(cpu.Options{Threads: 2})
	x := []float32{1, 10, 2, 20, 3, 30, 4, 40, 5, 50, 6, 60, 7, 70, 8, 80} // 2 samples × 2×2 × 2 channels
	trainNet, err := m.Build(eng, 2, true, 1, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	copy(trainNet.XValue.Float32s(), x)
	vm := G.NewTapeMachine(trainNet.Graph, G.WithEngine(eng))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	// Channel 0 holds 1…8 (mean 4.5, biased variance 5.25, unbiased 6),
	// channel 1 ten times that.
	y := data(trainNet.Logits.Value())
	if want := float32((1 - 4.5) / math.Sqrt(5.25+1e-5)); math.Abs(float64(y[0]-want)) > 1e-5 {
		t.Fatalf("training output %v, want %v first", y, want)
	}
	if want := float32(2*(80-45)/math.Sqrt(525+1e-5) + 0.5); math.Abs(float64(y[15]-want)) > 1e-4 {
		t.Fatalf("training output %v, want %v last", y, want)
	}
	mean, vr := m.Buffer("bn.running_mean").Data(), m.Buffer("bn.running_var").Data()
	if math.Abs(float64(mean[0])-0.45) > 1e-6 || math.Abs(float64(vr[0])-(0.9+0.6)) > 1e-5 || math.Abs(float64(mean[1])-4.5) > 1e-5 {
		t.Fatalf("running mean %v, variance %v", mean, vr)
	}
	evalNet, err := m.Build(eng, 2, false, 0, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	copy(evalNet.XValue.Float32s(), x)
	vm2 := G.NewTapeMachine(evalNet.Graph, G.WithEngine(eng))
	defer vm2.Close()
	if err := vm2.RunAll(); err != nil {
		t.Fatal(err)
	}
	y = data(evalNet.Logits.Value())
	if want := float32((1 - 0.45) / math.Sqrt(1.5+1e-5)); math.Abs(float64(y[0]-want)) > 1e-5 {
		t.Fatalf("evaluation output %v, want %v first", y[0], want)
	}
	if m.Buffer("bn.running_mean").Data()[0] != mean[0] {
		t.Fatal("an evaluation pass moved the running mean")
	}
}

// TestResNetTrainsAStep: the ResNet-8 preset builds, and one SGD step on a
// batch lowers its loss on that batch.
func TestResNetTrainsAStep(t *testing.T) {
	n, err := graph.ResNet(graph.Shape{H: 28, W: 28, C: 1}, 8, 10)
	if err != nil {
		t.Fatal(err)
	}
	m, err := FromNetwork(n, "kaiming", 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.NumParams() != 77754 {
		t.Fatalf("%d parameters", m.NumParams())
	}
	net, grads, vm := gradNet(t, m, 8)
	feed(net, 3, 10)
	before := lossOf(t, net, vm)
	for i, p := range m.Params {
		d, g := p.Data(), data(grads[i].Value())
		for j := range d {
			d[j] -= 0.05 * g[j]
		}
	}
	if after := lossOf(t, net, vm); !(after < before) {
		t.Fatalf("loss %v after a step, %v before", after, before)
	}
}

func dense(x []float32, shape ...int) tensor.Tensor {
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(x))
}

func gvals(ts []tensor.Tensor) []G.Value {
	out := make([]G.Value, len(ts))
	for i, t := range ts {
		out[i] = t
	}
	return out
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestThinGroupsRemovesZeroChannels: channels a dependency group carries
// as exact zeros (the stem's residual group: the stem, block 1's second
// convolution, their batch norms; block 2's inner group) disappear from
// every member — shapes checked, block 2's shortcut and first convolution
// reading fewer channels — and the thinned ResNet-8's evaluation logits
// equal the masked model's.
func TestThinGroupsRemovesZeroChannels(t *testing.T) {
	net, err := graph.ResNet(graph.Shape{H: 28, W: 28, C: 1}, 8, 10)
	if err != nil {
		t.Fatal(err)
	}
	m, err := FromNetwork(net, "kaiming", 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range m.Buffers {
		for i := range b.Data() {
			b.Data()[i] = 0.5 + float32(i%4)*0.25
		}
	}
	zero := func(name string, axis int, channels ...int) {
		p := m.Param(name)
		for _, k := range channels {
			graph.Member{Axis: axis}.Each(p.Shape, k, func(j int) { p.Data()[j] = 0 })
		}
	}
	stem := []int{1, 4, 5, 9, 15}
	for _, name := range []string{"conv1", "block1.conv2", "bn1", "bn1.bias", "block1.bn2", "block1.bn2.bias"} {
		zero(name, 0, stem...)
	}
	inner := []int{0, 2, 31}
	for _, name := range []string{"block2.conv1", "block2.bn1", "block2.bn1.bias"} {
		zero(name, 0, inner...)
	}
	small, rep, err := m.ThinGroups()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]int{
		"conv1": {11, 3, 3, 1}, "block1.conv1": {16, 3, 3, 11}, "block1.conv2": {11, 3, 3, 16}, "bn1": {11},
		"block2.conv1": {29, 3, 3, 11}, "block2.conv2": {32, 3, 3, 29}, "block2.sc": {32, 1, 1, 11}, "block2.bn1.running_var": {29},
	} {
		p := small.Param(name)
		if p == nil {
			p = small.Buffer(name)
		}
		if !slices.Equal(p.Shape, want) {
			t.Fatalf("%s: shape %v, want %v", name, p.Shape, want)
		}
	}
	if len(rep.Layers) != 3 || small.NumParams() >= m.NumParams() || small.Net.MACs() >= m.Net.MACs() {
		t.Fatalf("report %v; %d parameters of %d, %d MACs of %d", rep.Layers, small.NumParams(), m.NumParams(), small.Net.MACs(), m.Net.MACs())
	}
	x := make([]float32, 3*784)
	for i := range x {
		x[i] = float32(i%13) / 13
	}
	want, got := logits(t, m, x, 3), logits(t, small, x, 3)
	for i := range want {
		if math.Abs(float64(got[i]-want[i])) > 1e-4*max(1, math.Abs(float64(want[i]))) {
			t.Fatalf("logit %d: thinned %g, masked %g", i, got[i], want[i])
		}
	}
}
