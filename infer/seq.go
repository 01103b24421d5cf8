package infer

import (
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/internal/kernels"
)

// runtimeLayer is one layer the runtime runs: a layer of the network, or
// a part of one (of names the attention layer a part stands for once it
// has run: its output projection).
type runtimeLayer struct {
	graph.Layer
	of string
}

// runtimeLayers lists what the runtime runs of net: its layers, each
// attention layer as its projections — 1×1 convolutions over the
// positions, Name.q, .k and .v, whose kernels are chosen as any
// convolution's — the attention itself (Name.core, reading the three) and
// the output projection Name.o.
func runtimeLayers(net graph.Network) []runtimeLayer {
	var out []runtimeLayer
	prev := graph.Input
	for _, l := range net.Layers {
		if l.Kind != graph.Attention {
			out = append(out, runtimeLayer{Layer: l})
			prev = l.Name
			continue
		}
		in := l.InputsOf(prev)
		inner := graph.Shape{H: 1, W: l.In.W, C: l.Inner()}
		proj := func(part string, from []string) graph.Layer {
			return graph.Layer{Name: l.Name + part, Kind: graph.Conv, Inputs: from, In: l.In, Out: inner.C, Kernel: 1, Act: graph.Identity}
		}
		core := graph.Layer{Name: l.Name + ".core", Kind: graph.Attention, In: inner, Heads: l.Heads, Causal: l.Causal, SkipPadding: l.SkipPadding, Act: graph.Identity,
			Inputs: []string{l.Name + ".q", l.Name + ".k", l.Name + ".v"}}
		o := proj(".o", []string{core.Name})
		o.In, o.Out, o.Act = inner, l.In.C, l.Act
		out = append(out, runtimeLayer{Layer: proj(".q", in)}, runtimeLayer{Layer: proj(".k", in)}, runtimeLayer{Layer: proj(".v", in)},
			runtimeLayer{Layer: core}, runtimeLayer{Layer: o, of: l.Name})
		prev = l.Name
	}
	return out
}

// sequence reads a sequence layer's tensors: an embedding's token and
// position tables, a layer norm's scale and shift; the attention core's
// heads.
func (l *Layer) sequence(f *checkpoint.File, ls graph.Layer) error {
	switch ls.Kind {
	case graph.Embedding:
		w, pos := f.Tensor(ls.Name), f.Tensor(ls.Name+".pos")
		if w == nil || pos == nil || len(w.Data) != ls.VocabSize()*ls.Out || len(pos.Data) != ls.In.W*ls.Out {
			return fmt.Errorf("infer: layer %s: an embedding's token or position table missing, or not [%d %d] and [%d %d]", ls.Name, ls.VocabSize(), ls.Out, ls.In.W, ls.Out)
		}
		l.w, l.b, l.In, l.Out = w.Data, pos.Data, ls.VocabSize(), ls.Out
	case graph.LayerNorm:
		g, b := f.Tensor(ls.Name), f.Tensor(ls.Name+".bias")
		if g == nil || b == nil || len(g.Data) != ls.In.C || len(b.Data) != ls.In.C {
			return fmt.Errorf("infer: layer %s: a layer norm's scale or shift missing, or not %d channels", ls.Name, ls.In.C)
		}
		l.scale, l.shift = g.Data, b.Data
	case graph.Attention:
		l.heads, l.causal, l.skipPadding = ls.Heads, ls.Causal, ls.SkipPadding
	}
	return nil
}

// embeds says whether the model's input is token ids (its first layer an
// embedding).
func (m *Model) embeds() bool {
	return len(m.Layers) > 0 && m.Layers[0].Kind == string(graph.Embedding)
}

// checkTokens refuses inputs of a model that embeds tokens which are not
// ids of its vocabulary (id/255, as bytes arrive).
func (m *Model) checkTokens(x []float32) error {
	if !m.embeds() {
		return nil
	}
	vocab := m.Layers[0].In
	for i, v := range x {
		id := math.Round(float64(v) * 255)
		if id < 0 || id >= float64(vocab) || math.Abs(float64(v)*255-id) > 1e-3 {
			return fmt.Errorf("infer: input %d is %v, not a token id of the vocabulary of %d (id/255)", i, v, vocab)
		}
	}
	return nil
}

// embed looks up each position's token row and adds its position's row.
func (l *Layer) embed(dst, src []float32, batch int) {
	d := l.Out
	for i, v := range src[:batch*l.W] {
		id, t := int(math.Round(float64(v)*255)), i%l.W
		row, tok, pos := dst[i*d:(i+1)*d], l.w[id*d:(id+1)*d], l.b[t*d:(t+1)*d]
		for j := range row {
			row[j] = tok[j] + pos[j]
		}
	}
}

// layerNorm normalizes each position's channels (kernels.LayerNormFast:
// training's arithmetic but for the order of its float64 sums).
func (l *Layer) layerNorm(eng interface {
	Parallel(n, grain int, fn func(lo, hi int))
}, dst, src []float32) {
	c := l.C
	eng.Parallel(len(src)/c, max(1, 4096/c), func(lo, hi int) {
		kernels.LayerNormFast(dst[lo*c:hi*c], src[lo*c:hi*c], l.scale, l.shift, c, graph.LNEpsilon)
	})
}

// attend is the attention core on projections q, k, v [batch, T·D]: per
// sample and head softmax(q·kᵀ/√dh) (causal: over the positions up to
// each one's own; skipping padding: over the sample's length at most)
// times v, into dst [batch, T·D] (the softmax kernels.SoftmaxFast).
func (m *Model) attend(l *Layer, dst []float32, srcs [][]float32, batch int) {
	t, d := l.W, l.C
	dh := d / l.heads
	q, k, v := srcs[0], srcs[1], srcs[2]
	s := grow(&m.scores, t*t)
	scale := float32(1 / math.Sqrt(float64(dh)))
	for b := range batch {
		keys := t
		if l.skipPadding {
			keys = m.lens[b]
		}
		for h := range l.heads {
			off := b*t*d + h*dh
			m.eng.Sgemm(false, true, t, t, dh, scale, q[off:], d, k[off:], d, 0, s, t)
			for i := range t {
				live := keys
				if l.causal {
					live = min(i+1, keys)
				}
				kernels.SoftmaxFast(s[i*t:(i+1)*t], live)
			}
			m.eng.Sgemm(false, false, t, dh, t, 1, s, t, v[off:], d, 0, dst[off:], d)
		}
	}
}
