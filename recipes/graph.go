package recipes

import (
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclwrite"
)

// A model block with arch = "graph" describes its network layer by layer:
//
//	model {
//	  arch = "graph"
//	  layer "stem" {
//	    kind   = "conv"
//	    out    = 16
//	    kernel = 3
//	    pad    = 1
//	    bias   = false
//	  }
//	  layer "stem.bn" {
//	    kind = "batchnorm"
//	    act  = "relu"
//	  }
//	  repeat "stage1" {          # its layers count times: stage1.1.conv1, …, stage1.3.add
//	    count = 3
//	    layer "conv1" { … }
//	    layer "add" {
//	      kind   = "add"
//	      inputs = ["bn2", "in"]  # "in": the repetition's input
//	      act    = "relu"
//	    }
//	  }
//	  layer "pool" { kind = "global_avgpool" }
//	  layer "fc" {
//	    kind = "linear"
//	    out  = 10
//	  }
//	}
//
// A layer without inputs takes the layer before it (inside a repetition,
// the first takes the repetition's input); inputs name earlier layers, a
// repeat's name its last layer, "input" the images. The plan builds the
// network and checks its shapes, each error at its layer's block.

// LayerKinds are the kinds a layer block takes.
var LayerKinds = []string{"conv", "linear", "batchnorm", "add", "maxpool", "avgpool", "global_avgpool", "flatten", "embedding", "layernorm", "attention"}

// Layer is a layer block.
type Layer struct {
	Name   string
	Kind   string
	Inputs []string
	// In, when set, is the channels (a linear layer's features) the layer
	// must receive: a check, as PyTorch's in_channels is.
	In                          int
	Out                         int
	Kernel, Stride, Pad, Groups int
	Bias                        bool // a convolution's; true unless set false
	Act                         string
	Dropout                     float64
	// An attention layer's heads and causal mask; an embedding's
	// vocabulary.
	Heads  int
	Causal bool
	// SkipPadding: `attention` and `global_avgpool` skip the positions
	// after a window's last non-zero byte.
	SkipPadding bool
	Vocab       int
}

// Repeat is a repeat block: its layers Count times, repetition i's named
// Name.i.<layer>.
type Repeat struct {
	Name   string
	Count  int
	Layers []Layer
}

// GraphItem is one block of a graph model, in order: a layer or a repeat.
type GraphItem struct {
	Layer  *Layer
	Repeat *Repeat
}

var layerSection = section[Layer]{name: "layer", doc: "Inside a `model` with `arch = \"graph\"` or a `repeat`, labelled with the layer's name, in order.", label: func(l *Layer) *string { return &l.Name }, fields: []field[Layer]{
	{name: "kind", doc: "The layer: `conv`, `linear`, `batchnorm`, `add`, `maxpool`, `avgpool`, `global_avgpool`, `flatten`; for sequences {1, T, D} `embedding` (token ids to `out` values plus learned positions), `layernorm`, `attention` (a position-wise linear layer is a 1×1 `conv`; mean pooling over positions is `global_avgpool`).", at: func(l *Layer) any { return &l.Kind }, required: true, choices: LayerKinds},
	{name: "inputs", doc: "Earlier layers it reads (a repeat's name: its last layer; `input`: the images; `in`: the repetition's input). Default: the layer before it.", at: func(l *Layer) any { return &l.Inputs }, omit: func(l *Layer) bool { return len(l.Inputs) == 0 }},
	{name: "in", doc: "The channels (features) it must receive: a check, as PyTorch's in_channels.", at: func(l *Layer) any { return &l.In }, lo: 1, hi: 1 << 24, omit: func(l *Layer) bool { return l.In == 0 }},
	{name: "out", doc: "`conv`: filters; `linear`: features; `embedding`: values per token.", at: func(l *Layer) any { return &l.Out }, lo: 1, hi: 1 << 16, omit: func(l *Layer) bool { return l.Out == 0 }},
	{name: "kernel", doc: "Kernel size (square).", at: func(l *Layer) any { return &l.Kernel }, lo: 1, hi: 64, omit: func(l *Layer) bool { return l.Kernel == 0 }},
	{name: "stride", doc: "Stride.", at: func(l *Layer) any { return &l.Stride }, lo: 1, hi: 64, omit: func(l *Layer) bool { return l.Stride == 0 }},
	{name: "pad", doc: "Zero padding on each side.", at: func(l *Layer) any { return &l.Pad }, hi: 64, omit: func(l *Layer) bool { return l.Pad == 0 }},
	{name: "groups", doc: "`conv`: channel groups (= channels: depthwise).", at: func(l *Layer) any { return &l.Groups }, lo: 1, hi: 1 << 16, omit: func(l *Layer) bool { return l.Groups == 0 }},
	{name: "bias", doc: "`conv`, `linear`: a bias.", at: func(l *Layer) any { return &l.Bias }, def: true, omit: func(l *Layer) bool { return l.Bias }},
	{name: "act", doc: "The activation after it: `identity`, `relu`, `relu6`, `gelu`, `sigmoid`, `silu` (x·sigmoid(x), swish).", at: func(l *Layer) any { return &l.Act }, def: "identity", choices: []string{"identity", "relu", "relu6", "gelu", "sigmoid", "silu"}, omit: func(l *Layer) bool { return l.Act == "identity" }},
	{name: "heads", doc: "`attention`: heads (dividing its width).", at: func(l *Layer) any { return &l.Heads }, lo: 1, hi: 1 << 10, omit: func(l *Layer) bool { return l.Heads == 0 }},
	{name: "causal", doc: "`attention`: each position attends to itself and those before it only.", at: func(l *Layer) any { return &l.Causal }, omit: func(l *Layer) bool { return !l.Causal }},
	{name: "skip_padding", doc: "`attention`, `global_avgpool` over a sequence: skip the padding of windows shorter than the context (the positions after a window's last non-zero byte).", at: func(l *Layer) any { return &l.SkipPadding }, omit: func(l *Layer) bool { return !l.SkipPadding }},
	{name: "vocab", doc: "`embedding`: token ids (at most 256, the byte values; default 256).", at: func(l *Layer) any { return &l.Vocab }, lo: 1, hi: 256, omit: func(l *Layer) bool { return l.Vocab == 0 }},
	{name: "dropout", doc: "Dropout on its input, during training only.", at: func(l *Layer) any { return &l.Dropout }, hi: 0.95, omit: func(l *Layer) bool { return l.Dropout == 0 }},
}}

var repeatSection = section[Repeat]{name: "repeat", doc: "Inside a `model` with `arch = \"graph\"`: its `layer` blocks `count` times, each repetition fed by the one before.", label: func(r *Repeat) *string { return &r.Name }, fields: []field[Repeat]{
	{name: "count", doc: "Repetitions of its layer blocks; repetition i's layers are named `<repeat>.<i>.<layer>`.", at: func(r *Repeat) any { return &r.Count }, required: true, lo: 1, hi: 1000},
}}

// RepeatInput is what a layer in a repeat block names its repetition's
// input by.
const RepeatInput = "in"

var layerBlock = hcl.BlockHeaderSchema{Type: "layer", LabelNames: []string{"name"}}

// graph decodes a model block's layer and repeat blocks into m.Graph,
// recording each layer's block under "model.layer.<its full name>".
func (d *decoder) graph(blocks hcl.Blocks, m *Model, j *Job) {
	names := map[string]hcl.Range{}
	unique := func(b *hcl.Block, scope map[string]hcl.Range, what string) bool {
		name := b.Labels[0]
		if prev, dup := scope[name]; dup {
			d.errorf(b.LabelRanges[0], "duplicate "+what, "%s %q is declared twice (first at line %d)", what, name, prev.Start.Line)
			return false
		}
		if name == "" || strings.ContainsAny(name, " \t\n") {
			d.errorf(b.LabelRanges[0], "invalid name", "%s name %q is empty or holds spaces", what, name)
			return false
		}
		scope[name] = b.DefRange
		return true
	}
	layer := func(b *hcl.Block, prefix string) (Layer, bool) {
		l := layerSection.fresh(b.Labels[0])
		_, ok := layerSection.decode(d, b, prefix+"layer."+l.Name+".", &l, j)
		return l, ok
	}
	for _, b := range blocks {
		if !unique(b, names, b.Type) {
			continue
		}
		switch b.Type {
		case "layer":
			if l, ok := layer(b, "model."); ok {
				m.Graph = append(m.Graph, GraphItem{Layer: &l})
				d.ranges["model.layer."+l.Name] = b.DefRange
			}
		case "repeat":
			r := repeatSection.fresh(b.Labels[0])
			c, ok := repeatSection.decode(d, b, "model.repeat."+r.Name+".", &r, j, layerBlock)
			if !ok {
				continue
			}
			inner := map[string]hcl.Range{}
			for _, lb := range c.Blocks {
				if !unique(lb, inner, "layer") {
					continue
				}
				if lb.Labels[0] == RepeatInput {
					d.errorf(lb.LabelRanges[0], "invalid name", "a layer in a repeat block cannot be named %q: it names the repetition's input", RepeatInput)
					continue
				}
				if l, ok := layer(lb, "model.repeat."+r.Name+"."); ok {
					r.Layers = append(r.Layers, l)
					for i := 1; i <= r.Count; i++ {
						d.ranges[fmt.Sprintf("model.layer.%s.%d.%s", r.Name, i, l.Name)] = lb.DefRange
					}
				}
			}
			if len(r.Layers) == 0 {
				d.errorf(b.DefRange, "empty repeat", "repeat %q holds no layer block", r.Name)
				continue
			}
			m.Graph = append(m.Graph, GraphItem{Repeat: &r})
		}
	}
	switch {
	case m.Arch == "graph" && len(m.Graph) == 0:
		d.errorf(d.rangeOf("model"), "missing layers", `model { arch = "graph" } needs layer blocks`)
	case m.Arch != "graph" && len(blocks) > 0:
		d.errorf(blocks[0].DefRange, "unexpected layers", `layer and repeat blocks describe a model { arch = "graph" }, not arch %q`, m.Arch)
	}
}

// Expand returns a graph model's layers with repeats unrolled: full names
// (Name.i.<layer>), every input resolved to a layer name (a repeat's name
// to its last layer, "in" to the repetition's input).
func (m Model) Expand() []Layer {
	var out []Layer
	alias := map[string]string{} // repeat name → its last layer
	resolve := func(in string) string {
		if a, ok := alias[in]; ok {
			return a
		}
		return in
	}
	prev := "input"
	for _, it := range m.Graph {
		if l := it.Layer; l != nil {
			e := *l
			e.Inputs = nil
			for _, in := range l.Inputs {
				e.Inputs = append(e.Inputs, resolve(in))
			}
			out, prev = append(out, e), e.Name
			continue
		}
		r := it.Repeat
		for i := 1; i <= r.Count; i++ {
			prefix, start := fmt.Sprintf("%s.%d.", r.Name, i), prev
			local := map[string]bool{}
			for _, l := range r.Layers {
				local[l.Name] = true
			}
			for _, l := range r.Layers {
				e := l
				e.Name, e.Inputs = prefix+l.Name, nil
				for _, in := range l.Inputs {
					switch {
					case in == RepeatInput:
						in = start
					case local[in]:
						in = prefix + in
					default:
						in = resolve(in)
					}
					e.Inputs = append(e.Inputs, in)
				}
				out, prev = append(out, e), e.Name
			}
		}
		alias[r.Name] = prev
	}
	return out
}

// writeGraph appends a graph model's layer and repeat blocks to b.
func writeGraph(b *hclwrite.Body, m *Model) {
	for _, it := range m.Graph {
		if it.Layer != nil {
			layerSection.write(b, it.Layer)
			continue
		}
		rb := repeatSection.write(b, it.Repeat)
		for i := range it.Repeat.Layers {
			layerSection.write(rb, &it.Repeat.Layers[i])
		}
	}
}
