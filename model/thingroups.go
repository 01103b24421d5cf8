package model

import (
	"errors"
	"slices"

	"github.com/lathe-ml/lathe/graph"
)

// ThinGroups returns a physically smaller model that computes what m
// computes in evaluation, for any network the description holds: every
// channel of a dependency group (graph.ChannelGroups) that carries exactly
// zero — each producer's filter and bias and each batch norm's scale and
// shift zero at that channel, as dependency-group pruning leaves them — is
// removed from every member: producers' filters, batch norms' parameters
// and statistics, depthwise filters, readers' input channels. The
// report lists each convolution and linear layer whose outputs shrank. m
// is not changed.
func (m *Model) ThinGroups() (*Model, ThinReport, error) {
	groups, err := m.Net.ChannelGroups()
	if err != nil {
		return nil, ThinReport{}, err
	}
	params, buffers := map[string]*Param{}, map[string]bool{}
	for _, p := range append(slices.Clone(m.Params), m.Buffers...) {
		params[p.Name] = p
	}
	for _, b := range m.Buffers {
		buffers[b.Name] = true
	}
	// keep[name][axis]: the indices a tensor keeps along an axis.
	keep := map[string]map[int][]int{}
	space := map[string]int{} // a producer layer's output channel count
	for _, g := range groups {
		alive := make([]int, 0, g.Size)
		for k := range g.Size {
			if !g.Prunable || !zeroChannel(g, params, buffers, k) {
				alive = append(alive, k)
			}
		}
		if len(alive) == 0 {
			alive = []int{0} // shapes stay non-empty; the channel carries zero
		}
		for _, mb := range g.Members {
			p := params[mb.Param]
			if p == nil {
				continue
			}
			if keep[mb.Param] == nil {
				keep[mb.Param] = map[int][]int{}
			}
			idx := alive
			if mb.Stride > 0 { // a linear layer's columns after a flatten: every position
				idx = nil
				for pos := 0; pos < p.Shape[mb.Axis]/mb.Stride; pos++ {
					for _, k := range alive {
						idx = append(idx, pos*mb.Stride+k)
					}
				}
			}
			keep[mb.Param][mb.Axis] = idx
			if mb.Role == "out" && !p.Bias {
				space[p.Layer] = len(alive)
			}
		}
	}
	heads := m.thinHeads(params, keep)
	net, rep, err := thinnedNetwork(m.Net, space, heads)
	if err != nil {
		return nil, ThinReport{}, err
	}
	small, err := build(Spec{Init: m.Spec.Init}, m.Input, net, 0)
	if err != nil {
		return nil, ThinReport{}, err
	}
	for _, p := range append(slices.Clone(small.Params), small.Buffers...) {
		old := params[p.Name]
		if old == nil {
			return nil, ThinReport{}, errors.New("model: thinning lost parameter " + p.Name)
		}
		gather(p.Data(), p.Shape, old.Data(), old.Shape, keep[p.Name])
	}
	small.Quant, small.ActQuant, small.Fold, small.BN, small.ClassWeights, small.LabelSmoothing = m.Quant, m.ActQuant, m.Fold, m.BN, m.ClassWeights, m.LabelSmoothing
	for _, name := range rep.Layers {
		rep.Before = append(rep.Before, slices.Clone(m.Param(name).Shape))
		rep.After = append(rep.After, slices.Clone(small.Param(name).Shape))
	}
	return small, rep, nil
}

// thinHeads finds each attention layer's heads that carry exactly zero —
// their rows of q, k, v and of those biases, their columns of o — and
// sets keep to the others' indexes; it returns the heads each attention
// layer keeps (at least one: shapes stay non-empty).
func (m *Model) thinHeads(params map[string]*Param, keep map[string]map[int][]int) map[string]int {
	out := map[string]int{}
	for _, l := range m.Net.Layers {
		if l.Kind != graph.Attention {
			continue
		}
		e, dh := l.Inner(), l.Inner()/l.Heads
		var alive []int // the kept rows of q, k, v (columns of o)
		for h := range l.Heads {
			zero := true
			for _, part := range []string{".q", ".k", ".v", ".o", ".q.bias", ".k.bias", ".v.bias"} {
				d := params[l.Name+part].Data()
				for j, v := range d {
					idx := j / (len(d) / e) // a row of q, k, v or their biases
					if part == ".o" {
						idx = j % e
					}
					if idx/dh == h && v != 0 {
						zero = false
					}
				}
			}
			if !zero || (h == l.Heads-1 && len(alive) == 0) {
				for c := h * dh; c < (h+1)*dh; c++ {
					alive = append(alive, c)
				}
			}
		}
		out[l.Name] = len(alive) / dh
		for _, part := range []string{".q", ".k", ".v", ".q.bias", ".k.bias", ".v.bias"} {
			keep[l.Name+part] = map[int][]int{0: alive}
		}
		keep[l.Name+".o"] = map[int][]int{1: alive}
	}
	return out
}

// zeroChannel says whether channel k of a group carries exactly zero:
// every producer's and batch norm's parameter is zero there.
func zeroChannel(g graph.ChannelGroup, params map[string]*Param, buffers map[string]bool, k int) bool {
	producers := 0
	for _, mb := range g.Members {
		p := params[mb.Param]
		if p == nil || mb.Role == "in" || (mb.Role == "pass" && !p.Norm) || buffers[p.Name] {
			continue // readers, depthwise filters (they carry the channel) and statistics do not decide
		}
		if mb.Role == "out" {
			producers++
		}
		zero := true
		graph.Member{Axis: mb.Axis}.Each(p.Shape, k, func(j int) { zero = zero && p.Data()[j] == 0 })
		if !zero {
			return false
		}
	}
	return producers > 0
}

// thinnedNetwork is net with each producer's outputs set to its count in
// space and each attention layer's heads to its count in heads, the
// shapes that follow recomputed (a depthwise convolution keeps as many
// filters and groups as channels reach it).
func thinnedNetwork(net graph.Network, space, heads map[string]int) (graph.Network, ThinReport, error) {
	c := graph.NewChain(net.Input, net.Classes)
	c.Net.PerPosition = net.PerPosition // a language model stays one
	var rep ThinReport
	for _, l := range net.Layers {
		in := c.Shape(c.Last())
		if len(l.Inputs) > 0 {
			in = c.Shape(l.Inputs[0])
		}
		nl := l
		depthwise := l.Kind == graph.Conv && l.GroupCount() > 1 && l.GroupCount() == l.In.C && l.Out == l.In.C
		switch {
		case depthwise:
			nl.Out, nl.Groups = in.C, in.C
		case l.Kind == graph.Conv || l.Kind == graph.Linear:
			if n, ok := space[l.Name]; ok {
				nl.Out = n
			}
		case l.Kind == graph.Attention:
			if h, ok := heads[l.Name]; ok && h != l.Heads {
				nl.Out, nl.Heads = h*(l.Inner()/l.Heads), h
				rep.Layers = append(rep.Layers, l.Name+".q")
				rep.Removed = append(rep.Removed, l.Inner()-nl.Out)
			}
		}
		if (l.Kind == graph.Conv || l.Kind == graph.Linear) && nl.Out != l.Out {
			rep.Layers = append(rep.Layers, l.Name)
			rep.Removed = append(rep.Removed, l.Out-nl.Out)
		}
		c.Add(nl)
	}
	out := c.Net
	for i := range out.Layers { // Chain.Add defaults the activation; keep the original's
		out.Layers[i].Act = net.Layers[i].Act
	}
	return out, rep, out.Validate()
}

// gather copies into dst (of shape) the elements of src (of srcShape) at
// the kept indices of each axis (all where keep has none).
func gather(dst []float32, shape []int, src []float32, srcShape []int, keep map[int][]int) {
	idx := make([][]int, len(shape))
	for a, d := range shape {
		if k, ok := keep[a]; ok && len(k) == d {
			idx[a] = k
			continue
		}
		idx[a] = make([]int, d)
		for i := range idx[a] {
			idx[a][i] = i
		}
	}
	strides := make([]int, len(srcShape))
	s := 1
	for a := len(srcShape) - 1; a >= 0; a-- {
		strides[a] = s
		s *= srcShape[a]
	}
	pos := make([]int, len(shape))
	for i := range dst {
		off := 0
		for a := range shape {
			off += idx[a][pos[a]] * strides[a]
		}
		dst[i] = src[off]
		for a := len(shape) - 1; a >= 0; a-- {
			if pos[a]++; pos[a] < shape[a] {
				break
			}
			pos[a] = 0
		}
	}
}
