package infer

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

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
		if causal { // 8-bit weights too
			gm.Quant = map[string]*model.QuantControl{}
			for _, name := range []string{"b1.attn.q", "b2.fc1", "head"} {
				gm.Quant[name] = &model.QuantControl{Spec: model.QuantSpec{Bits: 8, Symmetric: true, PerChannel: true}, Enabled: true}
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
		path := filepath.Join(t.TempDir(), "seq.onnx")
		out, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ExportONNX(f, out, ONNXOptions{}); err != nil {
			t.Fatal(err)
		}
		out.Close()
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
