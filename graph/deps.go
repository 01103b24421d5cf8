package graph

import (
	"fmt"
	"slices"
)

// A ChannelGroup is a set of channels that stand or fall together: removing
// channel k of the group removes, from every member, the slice the member
// holds of it — a convolution's filter k, a batch norm's k-th scale, shift
// and statistics, every consumer's input channel k (across residual
// additions, the channels of every addend and of the sum are one group:
// Fang et al., "DepGraph", CVPR 2023). Structured pruning ranks and removes
// a group's channels together, and thinning rebuilds every member smaller.
type ChannelGroup struct {
	Size int // channels
	// Prunable is false for a group no channel of which may go: the
	// network's input channels, its outputs (the classes), channels a
	// grouped (not depthwise) convolution mixes, and a sequence's stream of
	// embeddings (LayerNorm and attention read its channels together).
	Prunable bool
	Members  []Member
}

// Member is one tensor's share of a channel group: channel k is the slice
// at index k of axis Axis — or, for a linear layer after a flatten, the
// columns k + j·Stride for every position j.
type Member struct {
	Param  string // a parameter's or buffer's name
	Axis   int
	Stride int    // 0: one index per channel
	Role   string // "out" (produces the channel), "pass" (carries it: batch norm, depthwise filters), "in" (reads it)
}

func (m Member) String() string {
	return fmt.Sprintf("%s/%s[%d]", m.Param, m.Role, m.Axis)
}

// ChannelGroups lists the network's channel groups: one per channel space
// a layer creates (a convolution's filters, a linear layer's outputs),
// joined where a residual addition makes spaces one. The network input's
// space is the first group; the others follow in the order of the layers
// that create them.
func (n Network) ChannelGroups() ([]ChannelGroup, error) {
	if err := n.Validate(); err != nil {
		return nil, err
	}
	d := &deps{parent: []int{0}, size: []int{n.Input.C}, frozen: map[int]bool{0: true}}
	space := map[string]int{Input: 0} // a layer's output channel space
	shape := map[string]Shape{Input: n.Input}
	flatFrom := map[string]flatOrigin{} // a flat output's image origin
	members := map[int][]Member{}       // by space, before joining
	prev := Input
	for _, l := range n.Layers {
		ins := l.InputsOf(prev)
		in := space[ins[0]]
		switch l.Kind {
		case Conv:
			out := d.add(l.Out)
			space[l.Name] = out
			cin := l.In.C / l.GroupCount()
			switch {
			case l.GroupCount() == 1:
				members[in] = append(members[in], Member{Param: l.Name, Axis: 3, Role: "in"})
				members[out] = append(members[out], Member{Param: l.Name, Axis: 0, Role: "out"})
			case cin == 1 && l.Out == l.In.C: // depthwise: filter k reads channel k only
				d.union(in, out)
				members[in] = append(members[in], Member{Param: l.Name, Axis: 0, Role: "pass"})
			default: // grouped: channels mixed within groups
				d.frozen[in], d.frozen[out] = true, true
				members[out] = append(members[out], Member{Param: l.Name, Axis: 0, Role: "out"})
			}
			if !l.NoBias {
				members[out] = append(members[out], Member{Param: l.Name + ".bias", Axis: 0, Role: "out"})
			}
		case Linear:
			out := d.add(l.Out)
			space[l.Name] = out
			if f, ok := flatFrom[ins[0]]; ok {
				members[f.space] = append(members[f.space], Member{Param: l.Name, Axis: 1, Stride: f.stride, Role: "in"})
			} else if src := shape[ins[0]]; src.H*src.W > 1 { // flattened on the way in
				members[in] = append(members[in], Member{Param: l.Name, Axis: 1, Stride: src.C, Role: "in"})
			} else {
				members[in] = append(members[in], Member{Param: l.Name, Axis: 1, Role: "in"})
			}
			members[out] = append(members[out], Member{Param: l.Name, Axis: 0, Role: "out"}, Member{Param: l.Name + ".bias", Axis: 0, Role: "out"})
		case BatchNorm:
			space[l.Name] = in
			for _, p := range append(l.Params(), l.Buffers()...) {
				members[in] = append(members[in], Member{Param: p.Name, Axis: 0, Role: "pass"})
			}
		case Add:
			for _, other := range ins[1:] {
				d.union(in, space[other])
			}
			space[l.Name] = in
		case Embedding:
			// A table's columns are the stream's channels; removing one
			// would change what every LayerNorm after it computes.
			space[l.Name] = d.add(l.Out)
			d.frozen[space[l.Name]] = true
		case LayerNorm, Attention:
			// Each position's channels are normalized together, or mixed
			// through heads: none can go alone.
			space[l.Name] = in
			d.frozen[in] = true
		case Flatten:
			// A linear layer after it reads channel k at columns k + j·C.
			space[l.Name] = in
			if l.In.H*l.In.W > 1 {
				flatFrom[l.Name] = flatOrigin{space: in, stride: l.In.C}
			}
		default: // pooling keeps its input's channels
			space[l.Name] = in
			if f, ok := flatFrom[ins[0]]; ok {
				flatFrom[l.Name] = f
			}
		}
		shape[l.Name], prev = l.Output(), l.Name
	}
	d.frozen[space[prev]] = true // the classes
	return d.groups(members), nil
}

type flatOrigin struct{ space, stride int }

// deps is a union-find over channel spaces.
type deps struct {
	parent, size []int
	frozen       map[int]bool
}

func (d *deps) add(size int) int {
	d.parent = append(d.parent, len(d.parent))
	d.size = append(d.size, size)
	return len(d.parent) - 1
}

func (d *deps) find(i int) int {
	for d.parent[i] != i {
		d.parent[i] = d.parent[d.parent[i]]
		i = d.parent[i]
	}
	return i
}

// union joins two spaces (of one size: Validate checked the shapes); the
// earlier one stays the root, so groups keep the order of creation.
func (d *deps) union(a, b int) {
	ra, rb := d.find(a), d.find(b)
	if ra == rb {
		return
	}
	if rb < ra {
		ra, rb = rb, ra
	}
	d.parent[rb] = ra
}

func (d *deps) groups(members map[int][]Member) []ChannelGroup {
	byRoot := map[int]int{}
	var out []ChannelGroup
	for s := range d.parent {
		r := d.find(s)
		k, ok := byRoot[r]
		if !ok {
			k = len(out)
			byRoot[r] = k
			out = append(out, ChannelGroup{Size: d.size[r], Prunable: true})
		}
		out[k].Members = append(out[k].Members, members[s]...)
		if d.frozen[s] {
			out[k].Prunable = false
		}
	}
	for i := range out {
		slices.SortStableFunc(out[i].Members, func(a, b Member) int { return roleOrder(a.Role) - roleOrder(b.Role) })
	}
	return out
}

func roleOrder(r string) int { return slices.Index([]string{"out", "pass", "in"}, r) }

// Each calls f with the flat index of every element the member holds of
// channel k in a tensor of the given shape: the slice at index k of Axis —
// and, with a Stride, at k + j·Stride for every j.
func (m Member) Each(shape []int, k int, f func(int)) {
	inner, outer := 1, 1
	for _, d := range shape[m.Axis+1:] {
		inner *= d
	}
	for _, d := range shape[:m.Axis] {
		outer *= d
	}
	dim, step := shape[m.Axis], shape[m.Axis]
	if m.Stride > 0 {
		step = m.Stride
	}
	for o := range outer {
		for c := k; c < dim; c += step {
			for j := range inner {
				f((o*dim+c)*inner + j)
			}
		}
	}
}
