package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"

	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/graph"
)

// gradNet builds a training graph with gradients for every parameter.
func gradNet(t *testing.T, m *Model, batch int) (*Net, G.Nodes, G.VM) {
	t.Helper()
	eng := cpu.New(cpu.Options{Threads: 2})
	net, err := m.Build(eng, batch, true, 1, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	grads, err := G.Grad(net.Loss, net.Params...)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(net.Graph, G.WithEngine(eng))
	t.Cleanup(func() { vm.Close() })
	return net, grads, vm
}

func feed(net *Net, seed uint64, classes int) {
	r := rand.New(rand.NewPCG(seed, 0))
	for i, x := range net.XValue.Float32s() {
		_ = x
		net.XValue.Float32s()[i] = r.Float32()
	}
	for i := range net.YValue.Float32s() {
		net.YValue.Float32s()[i] = float32(r.IntN(classes))
	}
}

func lossOf(t *testing.T, net *Net, vm G.VM) float64 {
	t.Helper()
	vm.Reset()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	return float64(data(net.Loss.Value())[0])
}

// TestGradientsMatchFiniteDifferences checks every parameter's analytic
// gradient against central differences of the loss, on small batches of
// each architecture.
func TestGradientsMatchFiniteDifferences(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
	}{
		{"mlp", Spec{Arch: "mlp", Hidden: []int{12, 7}}},
		{"lenet5", Spec{Arch: "lenet5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(tc.spec, MNISTInput, 3)
			if err != nil {
				t.Fatal(err)
			}
			net, grads, vm := gradNet(t, m, 3)
			feed(net, 9, 10)
			checkGradients(t, m, net, grads, vm, 6, 2e-3, 4)
		})
	}
}

// checkGradients compares probes entries of every parameter's analytic
// gradient with central differences of the loss (step eps).
func checkGradients(t *testing.T, m *Model, net *Net, grads G.Nodes, vm G.VM, probes int, eps float64, seed uint64) {
	t.Helper()
	lossOf(t, net, vm)
	analytic := make([][]float32, len(grads))
	for i, g := range grads {
		analytic[i] = slices.Clone(data(g.Value()))
	}
	r := rand.New(rand.NewPCG(seed, seed))
	for pi, p := range m.Params {
		d := p.Data()
		for range probes {
			j := r.IntN(len(d))
			old := d[j]
			d[j] = old + float32(eps)
			lp := lossOf(t, net, vm)
			d[j] = old - float32(eps)
			lm := lossOf(t, net, vm)
			d[j] = old
			num := (lp - lm) / (2 * eps)
			got := float64(analytic[pi][j])
			// float32 forward passes: central differences carry ~1e-4
			// absolute noise at this eps; ReLU kinks can add more.
			if math.Abs(num-got) > 2e-3+0.05*math.Abs(num) {
				t.Errorf("%s[%d]: analytic %g, numeric %g", p.Name, j, got, num)
			}
		}
	}
}

// TestConvMatchesDirect compares the im2col convolution with a direct loop.
func TestConvMatchesDirect(t *testing.T) {
	g := graph.Shape{H: 9, W: 8, C: 3}
	k, f, n := 3, 4, 2
	r := rand.New(rand.NewPCG(1, 1))
	x := make([]float32, n*g.Size())
	w := make([]float32, f*k*k*g.C)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	oh, ow := g.H-k+1, g.W-k+1
	col := make([]float32, oh*ow*k*k*g.C)
	for b := 0; b < n; b++ {
		img := x[b*g.Size() : (b+1)*g.Size()]
		im2col(col, img, g, k)
		for oy := 0; oy < oh; oy++ {
			for ox := 0; ox < ow; ox++ {
				for fi := 0; fi < f; fi++ {
					var direct, viaCol float64
					for ky := 0; ky < k; ky++ {
						for kx := 0; kx < k; kx++ {
							for c := 0; c < g.C; c++ {
								wv := float64(w[((fi*k+ky)*k+kx)*g.C+c])
								direct += wv * float64(img[((oy+ky)*g.W+ox+kx)*g.C+c])
							}
						}
					}
					row := col[(oy*ow+ox)*k*k*g.C:]
					for i := 0; i < k*k*g.C; i++ {
						viaCol += float64(row[i]) * float64(w[fi*k*k*g.C+i])
					}
					if math.Abs(direct-viaCol) > 1e-9 {
						t.Fatalf("b%d (%d,%d) f%d: %g vs %g", b, oy, ox, fi, direct, viaCol)
					}
				}
			}
		}
	}
}

func TestReluGradMask(t *testing.T) {
	y := []float32{1, 0, -1, float32(math.Copysign(0, -1)), 3e-38, -3e-38, float32(math.Inf(1))}
	dy := []float32{5, 5, 5, 5, 5, 5, 5}
	want := []float32{5, 0, 0, 0, 5, 0, 5}
	got := make([]float32, len(y))
	reluGrad(got, y, dy)
	if !slices.Equal(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
}

func TestRegistryAndParameterCounts(t *testing.T) {
	for _, tc := range []struct {
		spec   Spec
		params int
		names  []string
	}{
		{Spec{Arch: "lenet300"}, 784*300 + 300 + 300*100 + 100 + 100*10 + 10, []string{"fc1", "fc2", "fc3"}},
		{Spec{Arch: "lenet5"}, 20*25 + 20 + 50*20*25 + 50 + 800*500 + 500 + 500*10 + 10, []string{"conv1", "conv2", "fc1", "fc2"}},
		{Spec{Arch: "teacher"}, 784*1200 + 1200 + 1200*1200 + 1200 + 1200*10 + 10, []string{"fc1", "fc2", "fc3"}},
	} {
		m, err := New(tc.spec, MNISTInput, 1)
		if err != nil {
			t.Fatal(err)
		}
		if m.NumParams() != tc.params {
			t.Errorf("%s: %d params, want %d", tc.spec.Arch, m.NumParams(), tc.params)
		}
		var names []string
		for _, w := range m.Weights() {
			names = append(names, w.Name)
			if len(w.Groups) != 2 {
				t.Errorf("%s: groups %v", w.Name, w.Groups)
			}
		}
		if !slices.Equal(names, tc.names) {
			t.Errorf("%s: weights %v, want %v", tc.spec.Arch, names, tc.names)
		}
	}
	if m, _ := New(Spec{Arch: "lenet5"}, MNISTInput, 1); m.NumParams() != 431080 {
		t.Errorf("LeNet-5 has %d parameters, want 431080 (Caffe / Deep Compression)", m.NumParams())
	}
}

func TestInitIsSeeded(t *testing.T) {
	a, _ := New(Spec{Arch: "lenet300"}, MNISTInput, 7)
	b, _ := New(Spec{Arch: "lenet300"}, MNISTInput, 7)
	c, _ := New(Spec{Arch: "lenet300"}, MNISTInput, 8)
	if !slices.Equal(a.Params[0].Data(), b.Params[0].Data()) {
		t.Fatal("same seed, different weights")
	}
	if slices.Equal(a.Params[0].Data(), c.Params[0].Data()) {
		t.Fatal("different seeds, same weights")
	}
	bound := float32(1 / math.Sqrt(784))
	for _, v := range a.Params[0].Data() {
		if v < -bound || v > bound {
			t.Fatalf("weight %v outside ±1/sqrt(fan_in)", v)
		}
	}
}

func TestDropoutKeepsExpectation(t *testing.T) {
	op := &DropoutOp{opBase: newBase("d", cpu.New(cpu.Options{})), P: 0.5, Seed: 3}
	m, _ := New(Spec{Arch: "mlp", Hidden: []int{4}}, MNISTInput, 1)
	_ = m
	n := 100000
	x := make([]float32, n)
	for i := range x {
		x[i] = 1
	}
	xv := tensorFrom(x, 1, n)
	y, err := op.Do(xv)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	zeros := 0
	for _, v := range data(y) {
		sum += float64(v)
		if v == 0 {
			zeros++
		}
	}
	if mean := sum / float64(n); math.Abs(mean-1) > 0.02 {
		t.Fatalf("mean after dropout %v, want 1", mean)
	}
	if frac := float64(zeros) / float64(n); math.Abs(frac-0.5) > 0.01 {
		t.Fatalf("dropped fraction %v", frac)
	}
	first := slices.Clone(data(y))
	y2, _ := op.Do(xv)
	if slices.Equal(first, data(y2)) {
		t.Fatal("the mask did not change between steps")
	}
}

func TestBadSpecs(t *testing.T) {
	for _, s := range []Spec{{Arch: "vgg"}, {Arch: "resnet", Depth: 21}, {Arch: "resnet", Hidden: []int{10}}, {Arch: "mobilenet", Depth: 8}, {Arch: "mlp"}, {Arch: "mlp", Hidden: []int{0}}, {Arch: "lenet300", Dropout: 1}} {
		if _, err := New(s, MNISTInput, 1); err == nil {
			t.Errorf("%+v accepted", s)
		}
	}
}

// TestTooLargeIsRefusedBeforeAllocating: a network past MaxParams is
// refused naming the limit and the largest parameter, without taking its
// memory (three 65 536-wide layers would need ≈ 34 GB).
func TestTooLargeIsRefusedBeforeAllocating(t *testing.T) {
	_, err := New(Spec{Arch: "mlp", Hidden: []int{65536, 65536, 65536}}, MNISTInput, 1)
	if err == nil || !strings.Contains(err.Error(), "more than 268435456 parameters") || !strings.Contains(err.Error(), "fc2 alone has 4294967296") {
		t.Fatalf("%v", err)
	}
	m, err := New(Spec{Arch: "mlp", Hidden: []int{64}}, MNISTInput, 1)
	if err != nil || m.NumParams() != 784*64+64+64*10+10 {
		t.Fatalf("%v", err)
	}
}

// TestDropoutMaskIsItsStream: call c of a dropout op keeps element i where
// the i-th 24-bit draw of PCG(seed, c) — the high 24 bits of each 32-bit
// half of a Uint64, low half first — is at least P·2^24, with the others
// scaled by 1/(1−P): the masks (so the trained bits) are defined by that
// stream, however the loop computes them.
func TestDropoutMaskIsItsStream(t *testing.T) {
	for _, p := range []float32{0, 0.2, 0.5, 0.9} {
		op := &DropoutOp{opBase: newBase("d", cpu.New(cpu.Options{})), P: p, Seed: 7, Calls: 11}
		n := 1001
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(i%7) - 3
		}
		y, err := op.Do(tensorFrom(x, 1, n))
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(7, 11))
		keep, thr := 1/(1-p), uint32(float64(p)*(1<<24))
		var bits uint64
		for i, v := range data(y) {
			if i%2 == 0 {
				bits = r.Uint64()
			}
			want := float32(0)
			if uint32(bits>>(32*(i%2)))>>8 >= thr {
				want = keep
			}
			if want *= x[i]; math.Float32bits(v) != math.Float32bits(want) {
				t.Fatalf("P %v: element %d: %v, want %v", p, i, v, want)
			}
		}
	}
}
