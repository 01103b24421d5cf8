package trainer

import (
	"fmt"
	"math"
	"slices"

	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/graph"
)

// groupMasks are a DependencyGroups event's masks: for each layer named, the channel
// group its output filters belong to (graph.ChannelGroups; layers in one
// residual group are pruned once, together) loses the target fraction of
// its channels with the smallest norm — the norm of everything the group's
// producers hold of a channel (their filters) — and every member loses
// them: producers' filters and biases, batch norms' scales and shifts
// (the channel then carries exactly zero), depthwise filters, readers'
// input channels. It returns the parameters masked and their masks.
func (p *PrunePolicy) groupMasks(s *State, target float64) ([]int, [][]byte, error) {
	groups, err := s.Model.Net.ChannelGroups()
	if err != nil {
		return nil, nil, err
	}
	index := map[string]int{}
	for i, prm := range s.Model.Params {
		index[prm.Name] = i
	}
	masks := map[int][]byte{}
	done := map[int]bool{}
	for _, layer := range p.Layers {
		gi := slices.IndexFunc(groups, func(g graph.ChannelGroup) bool {
			return slices.ContainsFunc(g.Members, func(m graph.Member) bool { return m.Param == layer && m.Role == "out" })
		})
		if gi < 0 || !groups[gi].Prunable {
			return nil, nil, fmt.Errorf("trainer: %s: layer %s's output channels cannot be pruned as a group (the network's input or output, or mixed by a grouped convolution)", p.Name(), layer)
		}
		if done[gi] {
			continue
		}
		done[gi] = true
		g := groups[gi]
		scores := make([]float64, g.Size)
		for _, m := range g.Members {
			i, ok := index[m.Param]
			if !ok || m.Role != "out" || s.Model.Params[i].Bias {
				continue
			}
			for k := range g.Size {
				m.Each(s.Model.Params[i].Shape, k, func(j int) {
					v := float64(s.Params[i][j])
					if p.Norm == compress.L1 {
						scores[k] += math.Abs(v)
					} else {
						scores[k] += v * v
					}
				})
			}
		}
		order := make([]int, g.Size)
		for k := range order {
			order[k] = k
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
		drop := int(math.Floor(p.layerTarget(layer, target)*float64(g.Size) + 1e-9))
		for _, m := range g.Members {
			i, ok := index[m.Param] // buffers have no mask: the scale and shift zero the channel
			if !ok {
				continue
			}
			mask := masks[i]
			if mask == nil {
				mask = make([]byte, len(s.Params[i]))
				for j := range mask {
					mask[j] = 1
				}
				masks[i] = mask
			}
			for _, k := range order[:drop] {
				m.Each(s.Model.Params[i].Shape, k, func(j int) { mask[j] = 0 })
			}
		}
	}
	var params []int
	for i := range masks {
		params = append(params, i)
	}
	slices.Sort(params)
	out := make([][]byte, len(params))
	for k, i := range params {
		out[k] = masks[i]
	}
	return params, out, nil
}
