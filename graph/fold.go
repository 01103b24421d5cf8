package graph

import (
	"fmt"
	"math"
	"slices"
)

// BNScale is the factor by which a batch norm in evaluation multiplies
// channel values: γ/√(running variance + ε), in float64 rounded once. The
// weight a layer folds its batch norm into is the layer's weight times
// this factor per output channel (Jacob et al. 2018 §3.2), in training
// (quantization-aware training with folding) and in the folded network
// alike.
func BNScale(gamma, runningVar float32) float32 {
	return float32(float64(gamma) / math.Sqrt(float64(runningVar)+BNEpsilon))
}

// BNScales sets s[k] = BNScale(gamma[k], runningVar[k]) for every channel.
func BNScales(s, gamma, runningVar []float32) {
	for k := range s {
		s[k] = BNScale(gamma[k], runningVar[k])
	}
}

// FoldPairs maps each convolution without an activation whose only
// reader is a batch norm (reading only it) to that batch norm: the pairs
// whose batch norm folds into the convolution's filters and bias. A
// depthwise or grouped convolution folds too (its filters are per output
// channel).
func (n Network) FoldPairs() map[string]string {
	readers := map[string][]string{}
	prev := Input
	for _, l := range n.Layers {
		for _, in := range l.InputsOf(prev) {
			readers[in] = append(readers[in], l.Name)
		}
		prev = l.Name
	}
	pairs := map[string]string{}
	for _, l := range n.Layers {
		if l.Kind != Conv || (l.Act != Identity && l.Act != "") || len(readers[l.Name]) != 1 {
			continue
		}
		if bn := n.Layer(readers[l.Name][0]); bn.Kind == BatchNorm {
			pairs[l.Name] = bn.Name
		}
	}
	return pairs
}

// Fold returns the network with the batch norms of pairs (layer → its
// batch norm, from FoldPairs) folded into their layers: each batch norm
// removed, its layer given a bias and the batch norm's activation, and
// every reader of the batch norm reading the layer instead.
func (n Network) Fold(pairs map[string]string) (Network, error) {
	all := n.FoldPairs()
	folded := map[string]string{} // batch norm → its layer
	for l, bn := range pairs {
		if all[l] != bn {
			return Network{}, fmt.Errorf("graph: batch norm %s does not fold into layer %s", bn, l)
		}
		folded[bn] = l
	}
	out := n.Clone()
	out.Layers = out.Layers[:0]
	prev := Input
	for _, l := range n.Layers {
		ins := slices.Clone(l.InputsOf(prev))
		prev = l.Name
		if into, ok := folded[l.Name]; ok {
			i := slices.IndexFunc(out.Layers, func(x Layer) bool { return x.Name == into })
			out.Layers[i].NoBias, out.Layers[i].Act = false, l.Act
			continue
		}
		renamed := false
		for k, in := range ins {
			if into, ok := folded[in]; ok {
				ins[k], renamed = into, true
			}
		}
		if renamed || len(l.Inputs) > 0 {
			l.Inputs = ins
		}
		// A layer that took the one listed before it keeps doing so when
		// that one is still its input.
		if len(l.Inputs) == 1 && len(out.Layers) > 0 && l.Inputs[0] == out.Layers[len(out.Layers)-1].Name {
			l.Inputs = nil
		}
		out.Layers = append(out.Layers, l)
	}
	return out, out.Validate()
}
