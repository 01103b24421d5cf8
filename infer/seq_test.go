package infer

import (
	"cmp"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/internal/kernels"
	"github.com/lathe-ml/lathe/internal/ort"
	"github.com/lathe-ml/lathe/model"
)

// TestTransformerAgreesWithTheTrainingGraph: the runtime runs a
// transformer — embedding with positions, layer norms, attention (causal
// and not) as its projections and core, GELU feed-forward layers,
// residual additions, mean pooling, an ngram convolution over the
// embeddings — as the training graph's evaluation
// pass does: logits within 1e-4 (relative) at batches of 1 and 5, with
// the kernels measurement chose, and the projections forced to the GEMM
// and to the direct kernel; skipping padding too, on windows padded with
// zero bytes after lengths from 1 to 16.
func TestTransformerAgreesWithTheTrainingGraph(t *testing.T) {
	type seqMode struct {
		causal, skip bool
		ngram        int
	}
	for _, mode := range []seqMode{{false, false, 0}, {true, false, 0}, {false, true, 0}, {true, true, 0}, {false, false, 3}, {false, true, 5}} {
		causal := mode.causal
		net, err := graph.Transformer(graph.Shape{H: 1, W: 16, C: 1}, graph.TransformerShape{Dim: 32, Heads: 4, Blocks: 2, MLP: 48, Ngram: mode.ngram}, 5, false)
		if err != nil {
			t.Fatal(err)
		}
		for i := range net.Layers {
			if k := net.Layers[i].Kind; k == graph.Attention {
				net.Layers[i].Causal, net.Layers[i].SkipPadding = causal, mode.skip
			} else if k == graph.GlobalAvgPool {
				net.Layers[i].SkipPadding = mode.skip
			}
		}
		attn := slices.IndexFunc(net.Layers, func(l graph.Layer) bool { return l.Name == "b1.attn" })
		net.Layers[attn].Out, net.Layers[attn].Heads = 24, 3 // three heads of 8 left
		if err := net.Validate(); err != nil {
			t.Fatal(err)
		}
		gm, err := model.FromNetwork(net, "uniform", 2)
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(5, 5))
		for _, p := range gm.Params {
			if p.Norm || p.Zero { // norms off the identity, positions off zero
				for i := range p.Data() {
					p.Data()[i] += float32(0.3 * r.NormFloat64())
				}
			}
		}
		m, err := Load(modelFile(t, gm, "seq"), cpu.New(cpu.Options{Threads: 2}))
		if err != nil {
			t.Fatal(err)
		}
		for _, kernel := range []string{"", Dense, Direct} {
			if kernel == Direct && !kernels.HasDirect() {
				continue
			}
			if kernel != "" {
				if err := m.Force(kernel); err != nil {
					t.Fatal(err)
				}
			}
			for _, batch := range []int{1, 5} {
				x := make([]float32, batch*16)
				for i := range x {
					x[i] = float32(r.IntN(256)) * (1.0 / 255)
				}
				if mode.skip {
					padWindows(x, 16, r)
				}
				want := evalLogits(t, gm, x, batch)
				got, err := m.Forward(x, batch)
				if err != nil {
					t.Fatal(err)
				}
				for i, w := range want {
					if math.Abs(float64(got[i]-w)) > 1e-4*max(1, math.Abs(float64(w))) {
						t.Fatalf("%+v, kernel %q, batch %d, logit %d: runtime %g, training graph %g", mode, kernel, batch, i, got[i], w)
					}
				}
			}
		}
		if _, err := m.Forward([]float32{0.5}, 1); err == nil {
			t.Fatal("a window of 1 byte for a model of 16 was run")
		}
		bad := make([]float32, 16)
		bad[3] = 0.3 // not id/255
		if _, err := m.Forward(bad, 1); err == nil {
			t.Fatal("an input that is no token id was run")
		}
	}
}

// TestTransformerExportsToONNX: the ONNX export of a transformer — byte ids
// as int64 [batch, T] gathered from the token table, LayerNormalization,
// attention as MatMul and Softmax, GELU through Erf, its projections
// narrowed by head pruning, an ngram convolution as a Conv over [1, T] —
// a classifier, and a language model (causal,
// 8-bit weights, logits [batch, T, classes]) — computes in onnxruntime
// what the runtime does: the same top-1 on every window (every position),
// logits within 1e-3; a classifier that skips padding too, on padded
// windows.
func TestTransformerExportsToONNX(t *testing.T) {
	type seqMode struct {
		causal, skip bool
		ngram        int
	}
	for _, mode := range []seqMode{{false, false, 0}, {true, false, 0}, {false, true, 0}, {false, false, 3}} {
		causal := mode.causal
		// Causal: a language model, scoring 5 classes at every position.
		net, err := graph.Transformer(graph.Shape{H: 1, W: 16, C: 1}, graph.TransformerShape{Dim: 32, Heads: 4, Blocks: 2, MLP: 48, Ngram: mode.ngram}, 5, causal)
		if err != nil {
			t.Fatal(err)
		}
		for i, l := range net.Layers {
			if l.Kind == graph.Attention || l.Kind == graph.GlobalAvgPool {
				net.Layers[i].SkipPadding = mode.skip
			}
		}
		attn := slices.IndexFunc(net.Layers, func(l graph.Layer) bool { return l.Name == "b1.attn" })
		net.Layers[attn].Out, net.Layers[attn].Heads = 16, 2 // two heads of 8 left
		gm, err := model.FromNetwork(net, "uniform", 3)
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(6, 6))
		for _, p := range gm.Params {
			if p.Norm || p.Zero {
				for i := range p.Data() {
					p.Data()[i] += float32(0.3 * r.NormFloat64())
				}
			}
		}
		if causal || mode.ngram > 0 { // 8-bit weights too (the ngram's kept row's codes: Layer.keepRow)
			gm.Quant = map[string]*model.QuantControl{}
			for _, name := range []string{"b1.attn.q", "b2.fc1", "head", "ngram"} {
				if gm.Param(name) != nil {
					gm.Quant[name] = &model.QuantControl{Spec: model.QuantSpec{Bits: 8, Symmetric: true, PerChannel: true}, Enabled: true}
				}
			}
		}
		f := modelFile(t, gm, "seq")
		m, err := Load(f, cpu.New(cpu.Options{Threads: 1}))
		if err != nil {
			t.Fatal(err)
		}
		const n = 200
		x := make([]float32, n*16)
		for i := range x {
			x[i] = float32(r.IntN(256)) * (1.0 / 255)
		}
		if mode.skip {
			padWindows(x, 16, r)
		}
		want, err := m.Forward(x, n)
		if err != nil {
			t.Fatal(err)
		}
		want = slices.Clone(want)
		path := exportFile(t, f, "seq.onnx")
		got := ort.Run(t, path, x, n, 1, 1, 16, "ids")
		if len(got) != len(want) {
			t.Fatalf("onnxruntime gave %d logits, the runtime %d", len(got), len(want))
		}
		for i := range want {
			if math.Abs(float64(got[i]-want[i])) > 1e-3 {
				t.Fatalf("%+v: logit %d: onnxruntime %v, runtime %v", mode, i, got[i], want[i])
			}
		}
		for s := range len(want) / 5 {
			if argmax(got[s*5:(s+1)*5]) != argmax(want[s*5:(s+1)*5]) {
				t.Fatalf("%+v: row %d: top-1 differs", mode, s)
			}
		}
		if causal && len(want) != n*16*5 {
			t.Fatalf("a language model's %d logits for %d windows", len(want), n)
		}
	}
}

// padWindows zeroes each window of t ids after a length drawn from 1 to
// t (a window of t keeps all), as a short text's tail is padded.
func padWindows(x []float32, t int, r *rand.Rand) {
	for w := range len(x) / t {
		clear(x[w*t+1+r.IntN(t) : (w+1)*t])
	}
}

// TestOneRowConvolutions: a convolution over one-row images (a sequence's
// ngram) runs as a 1×K one on its kernel's middle row — the others meet
// only padding — and computes what the training graph's K×K one does:
// float weights within 1e-4 with every kernel forced (the patch GEMM, CSR,
// the direct kernel on the patches); 8-bit weights on 8-bit inputs and
// outputs on the integer kernels within 5e-3, the direct integer kernel
// bit for bit the int8 one's; and its ONNX export (a [1, K] Conv, a
// ConvInteger on codes) within 1e-3 in onnxruntime.
func TestOneRowConvolutions(t *testing.T) {
	c := graph.NewChain(graph.Shape{H: 1, W: 20, C: 6}, 4)
	c.Add(graph.Layer{Name: "c1", Kind: graph.Conv, Out: 16, Kernel: 3, Pad: 1, Act: graph.ReLU})
	c.Add(graph.Layer{Name: "c2", Kind: graph.Conv, Out: 16, Kernel: 5, Pad: 2, Stride: 2})
	c.Add(graph.Layer{Name: "gap", Kind: graph.GlobalAvgPool})
	c.Add(graph.Layer{Name: "flat", Kind: graph.Flatten})
	c.Add(graph.Layer{Name: "fc", Kind: graph.Linear, Out: 4})
	if err := c.Net.Validate(); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(12, 12))
	const batch = 5
	x := make([]float32, batch*120)
	for i := range x {
		x[i] = float32(r.IntN(256)) * (1.0 / 255)
	}
	close := func(m *Model, want []float32, tol float64, what string) {
		t.Helper()
		got, err := m.Forward(x, batch)
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range want {
			if math.Abs(float64(got[i]-w)) > tol*max(1, math.Abs(float64(w))) {
				t.Fatalf("%s: logit %d: runtime %g, training graph %g", what, i, got[i], w)
			}
		}
	}
	for _, quantized := range []bool{false, true} {
		gm, err := model.FromNetwork(c.Net, "kaiming", 7)
		if err != nil {
			t.Fatal(err)
		}
		eng := cpu.New(cpu.Options{Threads: 2})
		if quantized {
			gm.Quant = map[string]*model.QuantControl{}
			for _, w := range gm.Weights() {
				gm.Quant[w.Name] = &model.QuantControl{Spec: model.QuantSpec{Bits: 8, Symmetric: true, PerChannel: true}, Enabled: true}
			}
			gm.ActQuant = map[string]*model.Observer{"c1": {Spec: model.QuantSpec{Bits: 8}, Momentum: 0.9, Enabled: true}}
			observeOnce(t, gm, eng, x, batch)
		}
		f := modelFile(t, gm, "rows")
		m, err := Load(f, eng)
		if err != nil {
			t.Fatal(err)
		}
		for i, k := range []int{3, 5} {
			if l := m.Layers[i]; !l.oneRow || l.In != k*6 && i == 0 || l.In != k*16 && i == 1 {
				t.Fatalf("layer %s: one row %v, %d inputs per position", l.Name, l.oneRow, l.In)
			}
		}
		want := evalLogits(t, gm, x, batch)
		if !quantized {
			for _, kernel := range []string{"", Dense, CSR, Direct} {
				if kernel == Direct && !kernels.HasDirect() {
					continue
				}
				if kernel != "" {
					if err := m.Force(kernel); err != nil {
						t.Fatal(err)
					}
				}
				close(m, want, 1e-4, "kernel "+cmp.Or(kernel, "measured"))
			}
		} else {
			if got := m.Layers[0].Candidates(); slices.ContainsFunc(got, func(k string) bool { return k != Int8 && k != DirectInt8 }) {
				t.Fatalf("c1 (8-bit inputs, weights and outputs) may run %v", got)
			}
			close(m, want, 5e-3, "integer kernels")
			directInt8MatchesInt8(t, m, x, batch)
		}
		path := exportFile(t, f, "rows.onnx")
		want, err = m.Forward(x, batch)
		if err != nil {
			t.Fatal(err)
		}
		nchw := make([]float32, len(x)) // onnxruntime's input is [batch, C, H, W]
		for i, v := range x {
			b, w, ch := i/120, i%120/6, i%6
			nchw[b*120+ch*20+w] = v
		}
		got := ort.Run(t, path, nchw, batch, 6, 1, 20)
		for i := range want {
			if math.Abs(float64(got[i]-want[i])) > 1e-3 {
				t.Fatalf("quantized %v: logit %d: onnxruntime %v, runtime %v", quantized, i, got[i], want[i])
			}
		}
	}
}

// exportFile writes model file f's ONNX export as name in a temporary
// folder and returns its path.
func exportFile(t *testing.T, f *checkpoint.File, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := ExportONNX(f, out, ONNXOptions{}); err != nil {
		t.Fatal(err)
	}
	return path
}
