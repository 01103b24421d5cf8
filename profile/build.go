package profile

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/rundir"
)

// Build makes the model file of a network under a configuration: in each
// group that keeps less than all its channels, the channels of least
// weight norm (summed over the layers producing them) are removed from
// every member and the network rebuilt smaller (model.ThinGroups); then
// each weighted layer takes its format — its smallest weights zeroed to
// the sparsity, or 2 of every 4 kept; and, for Int8, every weight is
// quantized (symmetric, per channel; 8 bits or the layer's Bits) with
// 8-bit observers on the outputs that feed weighted layers and batch
// norms folded into their convolutions (a transformer's weights only: its
// activations are signed). What Build makes is for timing and sizing: the
// weights are the original's, not retrained.
func Build(f *checkpoint.File, c Config) (*checkpoint.File, error) {
	m, st, err := rundir.LoadModel(f)
	if err != nil {
		return nil, err
	}
	m.Quant, m.ActQuant = nil, nil
	groups, err := m.Net.ChannelGroups()
	if err != nil {
		return nil, err
	}
	if c.Keep != nil && len(c.Keep) != len(groups) {
		return nil, fmt.Errorf("profile: a configuration of %d groups for a network of %d", len(c.Keep), len(groups))
	}
	thin := false
	for g, keep := range c.Keep {
		if keep == 1 {
			continue
		}
		if !groups[g].Prunable || !(keep > 0 && keep < 1) {
			return nil, fmt.Errorf("profile: group %d keeps %g: a fraction in (0, 1] of a prunable group", g, keep)
		}
		removeChannels(m, groups[g], max(1, int(math.Round(keep*float64(groups[g].Size)))))
		thin = true
	}
	if thin {
		if m, _, err = m.ThinGroups(); err != nil {
			return nil, err
		}
	}
	if err := applyFormats(m, c); err != nil {
		return nil, err
	}
	return rundir.ExportModel(m, "profile", st.Dataset, st.Files)
}

// removeChannels zeroes, in every parameter of the group (buffers keep
// theirs), all but the keep channels of largest norm over the group's
// producers.
func removeChannels(m *model.Model, g graph.ChannelGroup, keep int) {
	norm := make([]float64, g.Size)
	for _, mb := range g.Members {
		if p := m.Param(mb.Param); p != nil && mb.Role == "out" {
			d := p.Data()
			for k := range g.Size {
				mb.Each(p.Shape, k, func(j int) { norm[k] += float64(d[j]) * float64(d[j]) })
			}
		}
	}
	order := make([]int, g.Size)
	for k := range order {
		order[k] = k
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(norm[b], norm[a]) })
	for _, k := range order[keep:] {
		for _, mb := range g.Members {
			if p := m.Param(mb.Param); p != nil {
				d := p.Data()
				mb.Each(p.Shape, k, func(j int) { d[j] = 0 })
			}
		}
	}
}

// applyFormats stores each weight in its format and precision.
func applyFormats(m *model.Model, c Config) error {
	var quantized []string
	for _, p := range m.Weights() {
		name := cmp.Or(c.Format[p.Name], Dense)
		f, err := parseFormat(name)
		if err != nil {
			return fmt.Errorf("layer %s: %w", p.Name, err)
		}
		w := compress.Weight{Name: p.Name, Shape: p.Shape, Data: p.Data()}
		switch {
		case f.sparsity > 0:
			compress.Apply(compress.Magnitude(w, f.sparsity), w.Data)
		case f.nm:
			mask, err := compress.NOfM(w, 2, 4)
			if err != nil {
				return err
			}
			compress.Apply(mask, w.Data)
		}
		if c.Int8 {
			bits := cmp.Or(c.Bits[p.Name], 8)
			if bits < 2 || bits > 8 {
				return fmt.Errorf("profile: layer %s: %d bits, want 2 to 8", p.Name, bits)
			}
			if m.Quant == nil {
				m.Quant = map[string]*model.QuantControl{}
			}
			m.Quant[p.Name] = &model.QuantControl{Spec: model.QuantSpec{Bits: bits, Symmetric: true, PerChannel: true}, Enabled: true}
			quantized = append(quantized, p.Name)
		}
	}
	isWeight := func(name string) bool {
		return slices.ContainsFunc(m.Weights(), func(p *model.Param) bool { return p.Name == name })
	}
	for name := range c.Format {
		if !isWeight(name) {
			return fmt.Errorf("profile: format for %q, not a weight of the network", name)
		}
	}
	for name := range c.Bits {
		if !isWeight(name) {
			return fmt.Errorf("profile: bits for %q, not a weight of the network", name)
		}
	}
	if len(quantized) == 0 || (len(m.Net.Layers) > 0 && m.Net.Layers[0].Kind == graph.Embedding) {
		return nil
	}
	// Inputs quantized as a quantization-aware run leaves them: the
	// outputs feeding each quantized layer (a convolution's after its
	// batch norm), in a range wide enough for timing.
	pairs := m.Net.FoldPairs()
	m.Fold = pairs // each batch norm folded into its convolution, as quantization-aware training stores it
	m.ActQuant = map[string]*model.Observer{}
	for _, l := range feeders(m.Net, quantized) {
		if bn, ok := pairs[l]; ok {
			l = bn
		}
		m.ActQuant[l] = &model.Observer{Spec: model.QuantSpec{Bits: 8}, Min: 0, Max: 4, Initialized: true, Enabled: true, Frozen: true}
	}
	return nil
}

// feeders names, for each of the layers, the weighted layer, batch norm or
// addition whose output it reads — through max pooling and flattening,
// which keep their input's codes; the network's input needs none (pixels
// are codes), and a layer after an average pooling stays in float.
func feeders(net graph.Network, layers []string) []string {
	byName := map[string]graph.Layer{}
	inputOf := map[string]string{}
	prev := graph.Input
	for _, l := range net.Layers {
		byName[l.Name] = l
		inputOf[l.Name] = l.InputsOf(prev)[0]
		prev = l.Name
	}
	var out []string
	for _, name := range layers {
		src := inputOf[name]
		for src != graph.Input && (byName[src].Kind == graph.MaxPool || byName[src].Kind == graph.Flatten) {
			src = inputOf[src]
		}
		switch k := byName[src].Kind; {
		case src == graph.Input || slices.Contains(out, src):
		case k == graph.Linear || k == graph.Conv || k == graph.BatchNorm || k == graph.Add:
			out = append(out, src)
		default: // an average pooling's output is not codes: the layer after it runs in float
		}
	}
	return out
}
