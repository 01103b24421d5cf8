package profile

import (
	"fmt"
	"math"
	"slices"
)

// Loss is what each setting is predicted to cost in accuracy (validation
// accuracy lost, in any unit the caller keeps to; measured by sensitivity
// analysis), assumed additive over settings. A setting without an entry
// is not a candidate, but the dense, whole, float one (loss 0).
type Loss struct {
	// Format[layer][format] is the loss of the layer's weights in format.
	Format map[string]map[string]float64 `json:"format,omitempty"`
	// Width[g][i] is the loss of group g keeping Widths[i] of its
	// channels; a group without a row (or a shorter one) stays whole
	// (beyond the row).
	Width [][]float64 `json:"width,omitempty"`
	// Int8 is the loss of running on integer kernels; nil: float only.
	Int8 *float64 `json:"int8,omitempty"`
	// Bits4[layer] is the loss of the layer's weights in 4 bits rather
	// than 8, on integer kernels (a size setting: the kernels are int8's).
	Bits4 map[string]float64 `json:"bits4,omitempty"`
}

// Budget bounds a configuration's predicted latency, model file bytes
// and runtime memory; a bound of 0 is none (at least one is set).
type Budget struct {
	LatencyUs   float64 `json:"latency_us,omitempty"`
	ModelBytes  float64 `json:"model_bytes,omitempty"`
	MemoryBytes float64 `json:"memory_bytes,omitempty"`
}

// Cost is how far a prediction is from the budget: the largest of
// latency/budget, bytes/budget and memory/budget (≤ 1: met).
func (b Budget) Cost(us, bytes, memory float64) float64 {
	c := 0.0
	if b.LatencyUs > 0 {
		c = us / b.LatencyUs
	}
	if b.ModelBytes > 0 {
		c = max(c, bytes/b.ModelBytes)
	}
	if b.MemoryBytes > 0 {
		c = max(c, memory/b.MemoryBytes)
	}
	return c
}

// Solution is the solver's choice.
type Solution struct {
	Config         Config  `json:"config"`
	PredictedUs    float64 `json:"predicted_us"`
	PredictedBytes float64 `json:"predicted_bytes"`
	// PredictedMemory is the runtime's memory (0 from a profile without
	// memory tables).
	PredictedMemory float64 `json:"predicted_memory_bytes,omitempty"`
	Loss            float64 `json:"loss"`
	// Met is false when no configuration of the candidates meets the
	// budget: Config is then the closest one found (the least of
	// latency/budget and bytes/budget's larger).
	Met      bool   `json:"met"`
	Method   string `json:"method"`   // "exhaustive" or "lagrangian"
	Explored int    `json:"explored"` // configurations evaluated
}

// ExhaustiveLimit is the largest space Solve enumerates whole; beyond it,
// it relaxes the budget into the objective (loss + λ·latency), minimises
// that by coordinate descent for each λ of a bisection, and keeps the
// least loss among the configurations that met the budget.
var ExhaustiveLimit = 200_000

// knob is one choice of the solver: a group's width, a layer's format, or
// the precision.
type knob struct {
	group   int    // ≥ 0: a group's width index
	layer   string // a weighted layer's format, or its bits
	bits    bool   // the layer's weights in 8 or 4 bits (integer kernels)
	choices []string
	loss    []float64
}

// space is a profile and loss compiled for fast evaluation.
type space struct {
	p     *Profile
	knobs []knob
	// For each profiled layer: the knobs of its format (-1: dense), its
	// input and output groups (-1: whole) and the precision (-1: float).
	layers    [][5]int         // …, and the layer's bits knob (-1: 8 bits)
	tables    [][]*[][]float64 // per layer, per (precision, format) key index: µs
	sizes     [][]*[][]float64 // and bytes (weighted layers)
	mems      [][]*[][]float64 // and runtime memory (nil where the profile has none)
	keyIndex  map[string]int
	precision int
}

func (p *Profile) compile(loss Loss) (*space, error) {
	s := &space{p: p, precision: -1, keyIndex: map[string]int{}}
	for i, k := range p.sizeKeys() { // the latency tables' keys first, then the 4-bit sizes'
		s.keyIndex[k] = i
	}
	groupKnob := map[int]int{}
	for g, row := range loss.Width {
		if g >= len(p.Groups) {
			return nil, fmt.Errorf("profile: loss for group %d of %d", g, len(p.Groups))
		}
		if len(row) < 2 || !p.Groups[g].Prunable {
			continue
		}
		k := knob{group: g}
		for i, w := range p.Widths[:min(len(row), len(p.Widths))] {
			k.choices = append(k.choices, fmt.Sprint(w))
			k.loss = append(k.loss, row[i])
		}
		groupKnob[g] = len(s.knobs)
		s.knobs = append(s.knobs, k)
	}
	formatKnob := map[string]int{}
	for _, l := range p.Layers {
		fl := loss.Format[l.Name]
		if !l.Weighted || len(fl) == 0 {
			continue
		}
		k := knob{group: -1, layer: l.Name, choices: []string{Dense}, loss: []float64{fl[Dense]}}
		for _, f := range p.Formats {
			if v, ok := fl[f]; ok && f != Dense {
				k.choices, k.loss = append(k.choices, f), append(k.loss, v)
			}
		}
		formatKnob[l.Name] = len(s.knobs)
		s.knobs = append(s.knobs, k)
	}
	for name := range loss.Format {
		if _, ok := formatKnob[name]; !ok && !slices.ContainsFunc(p.Layers, func(l Layer) bool { return l.Name == name && l.Weighted }) {
			return nil, fmt.Errorf("profile: loss for %q, not a weighted layer of the profiled network", name)
		}
	}
	bitsKnob := map[string]int{}
	if loss.Int8 != nil && slices.Contains(p.Precisions, Int8) {
		s.precision = len(s.knobs)
		s.knobs = append(s.knobs, knob{group: -1, choices: []string{Float, Int8}, loss: []float64{0, *loss.Int8}})
		for _, l := range p.Layers {
			if v, ok := loss.Bits4[l.Name]; ok && l.Weighted {
				bitsKnob[l.Name] = len(s.knobs)
				s.knobs = append(s.knobs, knob{group: -1, layer: l.Name, bits: true, choices: []string{"8", "4"}, loss: []float64{0, v}})
			}
		}
	}
	find := func(m map[int]int, g int) int {
		if k, ok := m[g]; ok {
			return k
		}
		return -1
	}
	for _, l := range p.Layers {
		f := l.Name
		if !l.Weighted {
			f = l.Follows
		}
		fk, ok := formatKnob[f]
		if !ok {
			fk = -1
		}
		bk, ok := bitsKnob[l.Name]
		if !ok {
			bk = -1
		}
		s.layers = append(s.layers, [5]int{fk, find(groupKnob, l.In), find(groupKnob, l.Out), s.precision, bk})
		tab, size, mem := make([]*[][]float64, len(s.keyIndex)), make([]*[][]float64, len(s.keyIndex)), make([]*[][]float64, len(s.keyIndex))
		for key, i := range s.keyIndex {
			if t, ok := l.Us[key]; ok {
				tab[i] = &t
			}
			if t, ok := l.Bytes[key]; ok {
				size[i] = &t
			}
			if t, ok := l.Memory[key]; ok {
				mem[i] = &t
			}
		}
		s.tables, s.sizes, s.mems = append(s.tables, tab), append(s.sizes, size), append(s.mems, mem)
	}
	return s, nil
}

// eval is a choice's (one index per knob) predicted latency, bytes,
// memory and loss.
func (s *space) eval(x []int) (us, bytes, mem, loss float64) {
	us, bytes, mem = s.p.OverheadUs, s.p.OverheadBytes, s.p.OverheadMemory
	for k, v := range x {
		loss += s.knobs[k].loss[v]
	}
	prec := Float
	if s.precision >= 0 && x[s.precision] == 1 {
		prec = Int8
	}
	for li, dep := range s.layers {
		f := Dense
		if dep[0] >= 0 {
			f = s.knobs[dep[0]].choices[x[dep[0]]]
		}
		if f != Dense && s.p.Layers[li].Weighted && dep[2] >= 0 && x[dep[2]] > 0 {
			// A layer whose outputs are thinned is pruned by that alone
			// (a recipe prunes a weight by one method).
			return math.Inf(1), math.Inf(1), math.Inf(1), loss
		}
		i, j := 0, 0
		if dep[1] >= 0 {
			i = x[dep[1]]
		}
		if dep[2] >= 0 {
			j = x[dep[2]]
		}
		key := s.keyIndex[Key(prec, f)]
		us += cell(*s.tables[li][key], i, j)
		if m := s.mems[li][key]; m != nil {
			mem += cell(*m, i, j)
		}
		if b := dep[4]; b >= 0 && x[b] == 1 {
			if prec == Float { // 4-bit weights run on integer kernels only
				return math.Inf(1), math.Inf(1), math.Inf(1), loss
			}
			key = s.keyIndex[Key4(f)]
		}
		if sz := s.sizes[li][key]; sz != nil {
			bytes += cell(*sz, i, j)
		}
	}
	return us, bytes, mem, loss
}

// cell is a table's value at widths i, j: the geometric mean of the equal
// pairs where it was not measured.
func cell(t [][]float64, i, j int) float64 {
	if v := t[i][j]; v >= 0 {
		return v
	}
	return math.Sqrt(math.Max(t[i][i], 0) * math.Max(t[j][j], 0))
}

// config turns a choice into a Config.
func (s *space) config(x []int) Config {
	c := Config{Keep: make([]float64, len(s.p.Groups)), Format: map[string]string{}}
	for g := range c.Keep {
		c.Keep[g] = 1
	}
	for k, v := range x {
		switch kn := s.knobs[k]; {
		case kn.group >= 0:
			c.Keep[kn.group] = s.p.Widths[v]
		case kn.bits:
			if v == 1 {
				if c.Bits == nil {
					c.Bits = map[string]int{}
				}
				c.Bits[kn.layer] = 4
			}
		case kn.layer != "":
			if kn.choices[v] != Dense {
				c.Format[kn.layer] = kn.choices[v]
			}
		default:
			c.Int8 = v == 1
		}
	}
	return c
}

// Solve finds the configuration of least loss whose predicted latency,
// model bytes and runtime memory meet the budget (see ExhaustiveLimit for how). A layer whose output
// group is thinned keeps dense weights: a recipe prunes each weight by
// one method, and the thinning is that layer's. A budget no candidate
// meets is reported as such, with the fastest configuration found.
func (p *Profile) Solve(loss Loss, b Budget) (Solution, error) {
	if b.LatencyUs <= 0 && b.ModelBytes <= 0 && b.MemoryBytes <= 0 {
		return Solution{}, fmt.Errorf("profile: a budget of latency, model bytes, memory or some of them")
	}
	if b.MemoryBytes > 0 && !p.HasMemory() {
		return Solution{}, fmt.Errorf("profile: measured without memory tables (an older lathe): measure it again for a memory budget")
	}
	s, err := p.compile(loss)
	if err != nil {
		return Solution{}, err
	}
	size := 1.0
	for _, k := range s.knobs {
		size *= float64(len(k.choices))
	}
	// The search works on the cost (≤ 1: within budget) and the loss.
	best, closest := solution{loss: math.Inf(1)}, solution{cost: math.Inf(1)}
	explored := 0
	consider := func(x []int) (cost, loss float64) {
		us, bytes, mem, loss := s.eval(x)
		cost = b.Cost(us, bytes, mem)
		explored++
		if cost <= 1 && loss < best.loss {
			best = solution{x: slices.Clone(x), us: us, bytes: bytes, mem: mem, cost: cost, loss: loss}
		}
		if cost < closest.cost-1e-12 || (cost <= closest.cost+1e-12 && loss < closest.loss) {
			closest = solution{x: slices.Clone(x), us: us, bytes: bytes, mem: mem, cost: cost, loss: loss}
		}
		return cost, loss
	}
	method := "exhaustive"
	if size <= float64(ExhaustiveLimit) {
		x := make([]int, len(s.knobs))
		for {
			consider(x)
			k := 0
			for ; k < len(x); k++ { // the next choice, odometer order
				if x[k]++; x[k] < len(s.knobs[k].choices) {
					break
				}
				x[k] = 0
			}
			if k == len(x) {
				break
			}
		}
	} else {
		method = "lagrangian"
		// The precision decides every kernel at once: each is searched
		// on its own.
		if s.precision < 0 {
			s.lagrangian(1, make([]int, len(s.knobs)), consider)
		}
		for v := range 2 {
			if s.precision >= 0 {
				start := make([]int, len(s.knobs))
				start[s.precision] = v
				s.lagrangian(1, start, consider)
			}
		}
	}
	out := Solution{Method: method, Explored: explored, Met: best.x != nil}
	pick := best
	if !out.Met {
		pick = closest
	}
	out.Config, out.PredictedUs, out.PredictedBytes, out.PredictedMemory, out.Loss = s.config(pick.x), pick.us, pick.bytes, pick.mem, pick.loss
	return out, nil
}

type solution struct {
	x                          []int
	us, bytes, mem, cost, loss float64
}

// lagrangian minimises loss + λ·latency by coordinate descent (each knob
// in turn set to its best choice, the others fixed, until none moves),
// bisecting λ between 0 and one at which the result meets the budget (or
// latency decides alone); the precision stays as start has it. Each
// descent starts from start and from where a greedy pass from there ended (NetAdapt's step: the single change of
// least loss per µs saved, until the budget is met). Every configuration
// evaluated is offered to consider, which keeps the best that met the
// budget.
func (s *space) lagrangian(budget float64, start []int, consider func([]int) (float64, float64)) {
	greedy := s.greedy(budget, start, consider)
	descend := func(lambda float64) float64 {
		us := math.Inf(1)
		for _, from := range [][]int{start, greedy} {
			x := slices.Clone(from)
			for range 50 {
				moved := false
				for k := range s.knobs {
					if k == s.precision {
						continue
					}
					bestV, bestF := x[k], math.Inf(1)
					for v := range s.knobs[k].choices {
						x[k] = v
						us, loss := consider(x)
						if f := loss + lambda*us; f < bestF-1e-12*math.Abs(f) {
							bestV, bestF = v, f
						}
					}
					moved = moved || x[k] != bestV
					x[k] = bestV
				}
				if !moved {
					break
				}
			}
			u, _ := consider(x)
			us = min(us, u)
		}
		return us
	}
	if descend(0) <= budget {
		return
	}
	hi := 1e-6
	for hi < 1e12 && descend(hi) > budget {
		hi *= 4
	}
	if hi >= 1e12 { // nothing meets it: the fastest is known
		return
	}
	lo := hi / 4
	for range 40 {
		mid := (lo + hi) / 2
		if descend(mid) <= budget {
			hi = mid
		} else {
			lo = mid
		}
	}
}

// greedy starts from start and makes, one at a time, the single change
// (not of the precision) that saves cost at the least loss per unit
// saved — or, where none saves any, the best pair of changes — until the
// budget is met or nothing saves; it returns where it stopped.
func (s *space) greedy(budget float64, start []int, consider func([]int) (float64, float64)) []int {
	x := slices.Clone(start)
	us, loss := consider(x)
	for us > budget {
		var best []int // the knobs and values of the best move, in pairs
		bestRate := math.Inf(1)
		rate := func(move ...int) {
			if u, l := consider(x); u < us-1e-9 {
				if r := (l - loss) / (us - u); r < bestRate {
					best, bestRate = slices.Clone(move), r
				}
			}
		}
		s.changes(x, 0, func(k, v int) { rate(k, v) })
		if best == nil {
			// No single change saves (a thinned layer must stay dense,
			// say): the best pair of changes, if one does.
			s.changes(x, 0, func(k1, v1 int) {
				s.changes(x, k1+1, func(k2, v2 int) { rate(k1, v1, k2, v2) })
			})
		}
		if best == nil {
			break
		}
		for m := 0; m < len(best); m += 2 {
			x[best[m]] = best[m+1]
		}
		us, loss = consider(x)
	}
	return x
}

// changes calls f with x changed at one knob from the from-th on (the
// precision left alone) to each of its other values, restoring it after.
func (s *space) changes(x []int, from int, f func(k, v int)) {
	for k := from; k < len(s.knobs); k++ {
		if k == s.precision {
			continue
		}
		old := x[k]
		for v := range s.knobs[k].choices {
			if v != old {
				x[k] = v
				f(k, v)
			}
		}
		x[k] = old
	}
}
