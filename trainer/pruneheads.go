package trainer

import (
	"fmt"
	"math"
	"slices"

	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/graph"
)

// headMasks are the masks of a heads event: in each attention layer of
// p.Layers, the fraction target of its heads with the smallest norm (of
// their rows of q, k and v and columns of o, the weights only) removed —
// those rows with their biases, those columns — each layer on its own.
func (p *PrunePolicy) headMasks(s *State, target float64) ([]int, [][]byte, error) {
	index := map[string]int{}
	for i, prm := range s.Model.Params {
		index[prm.Name] = i
	}
	var params []int
	var masks [][]byte
	for _, name := range p.Layers {
		l := s.Model.Net.Layer(name)
		if l == nil || l.Kind != graph.Attention {
			return nil, nil, fmt.Errorf("trainer: %s: the model has no attention layer %q (thinned or renamed?)", p.Name(), name)
		}
		e, heads := l.Inner(), l.Heads
		dh := e / heads
		// each calls f on the indexes of head h in a projection's weight or
		// bias: its rows of q, k, v [E, D] and their biases [E], its columns
		// of o [D, E].
		each := func(part string, h int, f func(j int)) {
			n := len(s.Params[index[name+part]])
			if part == ".o" {
				for r := range n / e {
					for c := h * dh; c < (h+1)*dh; c++ {
						f(r*e + c)
					}
				}
				return
			}
			cols := n / e
			for j := h * dh * cols; j < (h+1)*dh*cols; j++ {
				f(j)
			}
		}
		parts := []string{".q", ".k", ".v", ".o", ".q.bias", ".k.bias", ".v.bias"}
		for _, part := range parts {
			if _, ok := index[name+part]; !ok {
				return nil, nil, fmt.Errorf("trainer: %s: layer %s has no parameter %s", p.Name(), name, name+part)
			}
		}
		scores := make([]float64, heads)
		for h := range heads {
			for _, part := range parts[:4] {
				w := s.Params[index[name+part]]
				each(part, h, func(j int) {
					if v := float64(w[j]); p.Norm == compress.L1 {
						scores[h] += math.Abs(v)
					} else {
						scores[h] += v * v
					}
				})
			}
		}
		order := make([]int, heads)
		for h := range order {
			order[h] = h
		}
		slices.SortStableFunc(order, func(a, b int) int {
			switch {
			case scores[a] < scores[b]:
				return -1
			case scores[a] > scores[b]:
				return 1
			}
			return 0
		})
		drop := int(math.Floor(p.layerTarget(name, target)*float64(heads) + 1e-9))
		for _, part := range parts {
			i := index[name+part]
			mask := make([]byte, len(s.Params[i]))
			for j := range mask {
				mask[j] = 1
			}
			for _, h := range order[:drop] {
				each(part, h, func(j int) { mask[j] = 0 })
			}
			params, masks = append(params, i), append(masks, mask)
		}
	}
	return params, masks, nil
}
