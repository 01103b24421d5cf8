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
)

// cnnNet is a small DAG with every kind the training graph runs beyond
// the zoo's: a strided, padded, bias-free conv with ReLU6, a depthwise
// conv, a residual addition, a padded 3×3 max pooling, a grouped 1×1
// conv, average pooling, global average pooling and flatten.
func cnnNet() graph.Network {
	c := graph.NewChain(graph.Shape{H: 7, W: 7, C: 2}, 3)
	c.Add(graph.Layer{Name: "a", Kind: graph.Conv, Out: 4, Kernel: 3, Stride: 2, Pad: 1, NoBias: true, Act: graph.ReLU6})
	c.Add(graph.Layer{Name: "b", Kind: graph.Conv, Out: 4, Kernel: 3, Pad: 1, Groups: 4, Act: graph.ReLU})
	c.Add(graph.Layer{Name: "c", Kind: graph.Add, Inputs: []string{"b", "a"}, Act: graph.ReLU})
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
	lossOf(t, net, vm)
	analytic := make([][]float32, len(grads))
	for i, g := range grads {
		analytic[i] = slices.Clone(data(g.Value()))
	}
	r := rand.New(rand.NewPCG(6, 6))
	for pi, p := range m.Params {
		d := p.Data()
		for range 8 {
			j := r.IntN(len(d))
			old := d[j]
			const eps = 1e-3
			d[j] = old + eps
			lp := lossOf(t, net, vm)
			d[j] = old - eps
			lm := lossOf(t, net, vm)
			d[j] = old
			num := (lp - lm) / (2 * eps)
			if got := float64(analytic[pi][j]); math.Abs(num-got) > 2e-3+0.05*math.Abs(num) {
				t.Errorf("%s[%d]: analytic %g, numeric %g", p.Name, j, got, num)
			}
		}
	}
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
			op := newConv(cpu.New(cpu.Options{Threads: 2}), l, false)
			y, err := op.Do(gvals(vals)...)
			if err != nil {
				t.Fatal(err)
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

// TestBatchNormIsRefusedUntilItTrains: a network with a batch norm is
// described but not built, naming the layer.
func TestBatchNormIsRefusedUntilItTrains(t *testing.T) {
	n, err := graph.ResNet(graph.Shape{H: 28, W: 28, C: 1}, 8, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := FromNetwork(n, "", 1); err == nil || !contains(err.Error(), "bn1: batch norm") {
		t.Fatalf("got %v", err)
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
