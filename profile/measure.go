package profile

import (
	"bufio"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/cpu"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/rundir"
)

// Options say what Measure measures.
type Options struct {
	Batch   int       // samples per forward call (default 1)
	Widths  []float64 // default DefaultWidths
	Formats []string  // default DefaultFormats
	// Precisions: Float, Int8 or both (default DefaultPrecisions).
	Precisions []string
	// Budget is about how long the timing of one variant takes (default
	// 150 ms; its kernels' timing at load comes on top).
	Budget time.Duration
	Model  string // the profiled file's name, recorded
	// Progress, if set, is called after each variant is measured.
	Progress func(done, total int, v Variant)
}

// Measure profiles a model file's network on eng: every format at every
// precision and pair of widths (see the package comment), each variant's
// layers timed in the runtime's own forward pass. The first variant is
// timed twice, the first time to warm the machine up.
func Measure(f *checkpoint.File, eng compute.Engine, o Options) (*Profile, error) {
	if err := o.fill(); err != nil {
		return nil, err
	}
	m, _, err := rundir.LoadModel(f)
	if err != nil {
		return nil, err
	}
	groups, err := m.Net.ChannelGroups()
	if err != nil {
		return nil, err
	}
	p := &Profile{Version: Version, Model: o.Model, Machine: machine(eng), Date: time.Now().UTC().Truncate(time.Second),
		Batch: o.Batch, Threads: threads(eng), Widths: o.Widths, Formats: o.Formats, Precisions: o.Precisions}
	for _, g := range groups {
		pg := Group{Channels: g.Size, Prunable: g.Prunable}
		for _, mb := range g.Members {
			if w := m.Param(mb.Param); w != nil && mb.Role == "out" && !w.Bias && !w.Norm {
				pg.Producers = append(pg.Producers, w.Layer)
			}
		}
		p.Groups = append(p.Groups, pg)
	}
	dense, err := Build(f, Config{})
	if err != nil {
		return nil, err
	}
	rt, err := infer.Load(dense, eng)
	if err != nil {
		return nil, err
	}
	p.Layers = layersOf(rt, groups)
	colour := p.colours()
	n := len(o.Widths)
	var pairs [][2]int
	for i := range n {
		for j := range n {
			if i == j || slices.Contains(colour, 1) {
				pairs = append(pairs, [2]int{i, j})
			}
		}
	}
	smp := newSamples(p, n)
	total := len(o.Precisions) * len(o.Formats) * len(pairs)
	for _, pr := range o.Precisions {
		for _, s := range o.Formats {
			for _, ij := range pairs {
				keep := make([]float64, len(groups))
				for g := range keep {
					keep[g] = 1
					if groups[g].Prunable {
						keep[g] = o.Widths[ij[colour[g]]]
					}
				}
				c := p.uniform(keep, pr, s)
				if len(p.Variants) == 0 { // warm the machine up
					if _, _, _, err := timeConfig(f, eng, c, o.Batch, o.Budget); err != nil {
						return nil, fmt.Errorf("profile: %w", err)
					}
				}
				v, err := smp.variant(f, eng, o, c, s, func(l Layer) (int, int) {
					i, j := ij[colour[l.In]], ij[colour[l.Out]]
					if !groups[l.In].Prunable {
						i = 0
					}
					if !groups[l.Out].Prunable {
						j = 0
					}
					return i, j
				})
				if err != nil {
					return nil, fmt.Errorf("profile: %s, format %s, widths %v: %w", pr, s, keep, err)
				}
				if s == Dense && pr == Float && ij == [2]int{0, 0} {
					p.DenseUs, p.DenseBytes, p.DenseMemory = v.MeasuredUs, float64(v.Bytes), float64(v.Memory)
				}
				p.Variants = append(p.Variants, v)
				if o.Progress != nil {
					o.Progress(len(p.Variants), total, v)
				}
			}
		}
	}
	smp.tables(p, n)
	if p.DenseUs == 0 { // float is not among the precisions: the dense network is timed alone
		_, call, rt, err := timeFile(dense, eng, o.Batch, o.Budget)
		if err != nil {
			return nil, err
		}
		b, err := checkpoint.Encode(dense)
		if err != nil {
			return nil, err
		}
		p.DenseUs, p.DenseBytes, p.DenseMemory = us(call), float64(len(b)), float64(rt.Bytes())
	}
	return p, p.predictVariants(f, eng, o)
}

// fill sets the defaults of what is not given and checks the rest.
func (o *Options) fill() error {
	o.Batch = max(o.Batch, 1)
	o.Widths = cmpSlice(o.Widths, DefaultWidths)
	o.Formats = cmpSlice(o.Formats, DefaultFormats)
	o.Precisions = cmpSlice(o.Precisions, DefaultPrecisions)
	if o.Budget <= 0 {
		o.Budget = 150 * time.Millisecond
	}
	if err := checkWidths(o.Widths); err != nil {
		return err
	}
	for _, s := range o.Formats {
		if _, err := parseFormat(s); err != nil {
			return err
		}
	}
	for _, s := range o.Precisions {
		if err := checkPrecision(s); err != nil {
			return err
		}
	}
	return nil
}

// samples are what the variants measured, per layer, table key and pair
// of widths ([layer][key][i][j]): times, stored bytes (weighted layers),
// parameter memory and output buffer bytes; and per variant the call's
// time beyond its layers', the file's bytes beyond its weights, and the
// memory beyond the layers' parameters with the output buffers' sum.
type samples struct {
	p                   *Profile
	us, size, held, act []map[string][][][]float64
	overhead, overBytes []float64
	memRest, memAct     []float64
}

func newSamples(p *Profile, n int) *samples {
	s := &samples{p: p}
	layout := func(keys []string) []map[string][][][]float64 {
		out := make([]map[string][][][]float64, len(p.Layers))
		for k := range out {
			out[k] = map[string][][][]float64{}
			for _, key := range keys {
				out[k][key] = grid(n, func() []float64 { return nil })
			}
		}
		return out
	}
	s.us, s.size, s.held, s.act = layout(p.keys()), layout(p.sizeKeys()), layout(p.keys()), layout(p.keys())
	return s
}

// variant builds a uniform configuration's network (every weighted layer
// in format), times it and records what it measured; widths gives each
// layer's pair of width indexes.
func (s *samples) variant(f *checkpoint.File, eng compute.Engine, o Options, c Config, format string, widths func(Layer) (int, int)) (Variant, error) {
	p := s.p
	vf, err := Build(f, c)
	if err != nil {
		return Variant{}, err
	}
	encoded, err := checkpoint.Encode(vf) // fills each tensor's stored bytes
	if err != nil {
		return Variant{}, err
	}
	stored, stored4 := storedBytes(vf), map[string]int(nil)
	if c.Int8 { // the same network in 4-bit codes: its sizes (its kernels are int8's)
		c4 := c
		c4.Bits = map[string]int{}
		for _, l := range p.Layers {
			if l.Weighted {
				c4.Bits[l.Name] = 4
			}
		}
		v4, err := Build(f, c4)
		if err != nil {
			return Variant{}, err
		}
		if _, err := checkpoint.Encode(v4); err != nil {
			return Variant{}, err
		}
		stored4 = storedBytes(v4)
	}
	layers, call, rt, err := timeFile(vf, eng, o.Batch, o.Budget)
	if err != nil {
		return Variant{}, err
	}
	if len(layers) != len(p.Layers) {
		return Variant{}, fmt.Errorf("the runtime made %d layers of the network, the dense one %d", len(layers), len(p.Layers))
	}
	key := Key(c.Precision(), format)
	sum, weights, heldSum, actSum := 0.0, 0, 0.0, 0.0
	for k, l := range p.Layers {
		i, j := widths(l)
		s.us[k][key][i][j] = append(s.us[k][key][i][j], us(layers[k]))
		sum += us(layers[k])
		h, a := float64(rt.Layers[k].Bytes()), float64(4*o.Batch*rt.Layers[k].Outputs())
		s.held[k][key][i][j] = append(s.held[k][key][i][j], h)
		s.act[k][key][i][j] = append(s.act[k][key][i][j], a)
		heldSum += h
		actSum += a
		if l.Weighted {
			b := stored[l.Name] + stored[l.Name+".bias"]
			s.size[k][key][i][j] = append(s.size[k][key][i][j], float64(b))
			weights += b
			if stored4 != nil {
				k4 := Key4(format)
				s.size[k][k4][i][j] = append(s.size[k][k4][i][j], float64(stored4[l.Name]+stored4[l.Name+".bias"]))
			}
		}
	}
	s.overhead = append(s.overhead, us(call)-sum)
	s.overBytes = append(s.overBytes, float64(len(encoded)-weights))
	s.memRest, s.memAct = append(s.memRest, float64(rt.Bytes())-heldSum), append(s.memAct, actSum)
	return Variant{Format: format, Precision: c.Precision(), Keep: c.Keep, MeasuredUs: us(call), Bytes: len(encoded), Memory: rt.Bytes()}, nil
}

// tables sets the profile's tables — each cell the median of its samples
// — and its overheads.
func (s *samples) tables(p *Profile, n int) {
	p.ActivationShare, p.OverheadMemory = fitLine(s.memAct, s.memRest)
	for k := range p.Layers {
		p.Layers[k].Us = table(p.keys(), n, s.us[k])
		if p.Layers[k].Weighted {
			p.Layers[k].Bytes = table(p.sizeKeys(), n, s.size[k])
		}
		h, a := table(p.keys(), n, s.held[k]), table(p.keys(), n, s.act[k])
		for key, t := range h {
			for i := range t {
				for j, v := range t[i] {
					if v >= 0 {
						t[i][j] = v + p.ActivationShare*a[key][i][j]
					}
				}
			}
		}
		p.Layers[k].Memory = h
	}
	slices.Sort(s.overhead)
	slices.Sort(s.overBytes)
	p.OverheadUs, p.OverheadBytes = s.overhead[len(s.overhead)/2], s.overBytes[len(s.overBytes)/2]
}

// predictVariants gives each variant the table's predictions; a
// measurement 15 % off the table (whose cells are medians over the
// variants sharing them) is timed once more, the lesser kept — as
// LayerTimes keeps the least of its rounds: a slow spell that outlasted
// one variant's rounds.
func (p *Profile) predictVariants(f *checkpoint.File, eng compute.Engine, o Options) error {
	for i := range p.Variants {
		v := &p.Variants[i]
		c := p.uniform(v.Keep, v.Precision, v.Format)
		var err error
		if v.PredictedUs, err = p.Predict(c); err != nil {
			return err
		}
		if v.PredictedMemory, err = p.PredictMemory(c); err != nil {
			return err
		}
		if v.MeasuredUs > 0 && math.Abs(v.PredictedUs/v.MeasuredUs-1) > 0.15 {
			again, _, err := Measured(f, eng, c, o.Batch, o.Budget)
			if err != nil {
				return err
			}
			v.Remeasured, v.MeasuredUs = true, min(v.MeasuredUs, again)
		}
	}
	return nil
}

// fitLine fits y ≈ a·x + b by least squares; where x does not vary, a is
// 1 and b the median of y − x.
func fitLine(x, y []float64) (a, b float64) {
	n := float64(len(x))
	var mx, my float64
	for i := range x {
		mx, my = mx+x[i]/n, my+y[i]/n
	}
	var sxx, sxy float64
	for i := range x {
		sxx += (x[i] - mx) * (x[i] - mx)
		sxy += (x[i] - mx) * (y[i] - my)
	}
	if sxx <= 1e-9*max(1, mx*mx)*n {
		r := make([]float64, len(x))
		for i := range x {
			r[i] = y[i] - x[i]
		}
		slices.Sort(r)
		return 1, r[len(r)/2]
	}
	a = sxy / sxx
	return a, my - a*mx
}

// storedBytes is each tensor's stored bytes in an encoded file.
func storedBytes(f *checkpoint.File) map[string]int {
	out := map[string]int{}
	for _, t := range f.Tensors {
		out[t.Name] = t.StoredBytes
	}
	return out
}

// table is the median of the samples at each key and pair of widths (-1
// where there are none).
func table(keys []string, n int, samples map[string][][][]float64) map[string][][]float64 {
	out := map[string][][]float64{}
	for _, key := range keys {
		out[key] = grid(n, func() float64 { return -1 })
		for i := range n {
			for j := range n {
				if v := samples[key][i][j]; len(v) > 0 {
					slices.Sort(v)
					out[key][i][j] = v[len(v)/2]
				}
			}
		}
	}
	return out
}

// uniform is the configuration of every weighted layer in one format.
func (p *Profile) uniform(keep []float64, precision, format string) Config {
	c := Config{Keep: keep, Format: map[string]string{}, Int8: precision == Int8}
	for _, l := range p.Layers {
		if l.Weighted {
			c.Format[l.Name] = format
		}
	}
	return c
}

// timeConfig builds a configuration's network, loads it in the runtime
// and times it: each layer's median and a whole call's.
func timeConfig(f *checkpoint.File, eng compute.Engine, c Config, batch int, budget time.Duration) ([]time.Duration, time.Duration, *infer.Model, error) {
	vf, err := Build(f, c)
	if err != nil {
		return nil, 0, nil, err
	}
	return timeFile(vf, eng, batch, budget)
}

// timeFile loads a model file in the runtime and times it: each layer's
// median and a whole call's; and the runtime's model, its buffers grown.
func timeFile(vf *checkpoint.File, eng compute.Engine, batch int, budget time.Duration) ([]time.Duration, time.Duration, *infer.Model, error) {
	rt, err := infer.Load(vf, eng)
	if err != nil {
		return nil, 0, nil, err
	}
	x := Inputs(rt, batch, 1)
	t0 := time.Now()
	if _, err := rt.Forward(x, batch); err != nil {
		return nil, 0, nil, err
	}
	one := max(time.Since(t0), time.Microsecond)
	reps := int(min(5000, max(9, budget/2/one)))
	layers, call, err := rt.LayerTimes(x, batch, reps)
	return layers, call, rt, err
}

// Measured is the whole forward call's median time in µs of a
// configuration's network at a batch size, measured now on eng, and the
// runtime's memory then.
func Measured(f *checkpoint.File, eng compute.Engine, c Config, batch int, budget time.Duration) (latencyUs float64, memory int, err error) {
	_, call, rt, err := timeConfig(f, eng, c, batch, max(budget, 10*time.Millisecond))
	if err != nil {
		return 0, 0, err
	}
	return us(call), rt.Bytes(), nil
}

// MeasuredFile is a model file's whole forward call's median time in µs
// at a batch size, measured now on eng, the file as it is (its
// quantization, sparsity and widths); and the runtime's memory then
// (infer.Model.Bytes).
func MeasuredFile(f *checkpoint.File, eng compute.Engine, batch int, budget time.Duration) (latencyUs float64, memory int, err error) {
	_, call, rt, err := timeFile(f, eng, batch, max(budget, 10*time.Millisecond))
	if err != nil {
		return 0, 0, err
	}
	return us(call), rt.Bytes(), nil
}

// Inputs is a batch of inputs the model accepts, a pure function of seed:
// token ids from 1 up for a network that starts with an embedding (as the
// runtime takes them: id/255, the way bytes arrive), pixels in [0, 1) for
// the others.
func Inputs(m *infer.Model, batch int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	x := make([]float32, batch*m.Features)
	tokens := len(m.Net.Layers) > 0 && m.Net.Layers[0].Kind == graph.Embedding
	for i := range x {
		if tokens {
			x[i] = float32(1+r.IntN(max(1, m.Layers[0].In-1))) / 255
		} else {
			x[i] = r.Float32()
		}
	}
	return x
}

// layersOf maps the runtime's layers onto channel groups: a weighted
// layer reads the group its weight is an "in" member of and writes the
// one it is an "out" member of; a layer without weights reads and writes
// its first input's group. A weight in no group (an attention layer's
// projections: their heads are not channel groups) reads and writes the
// network input's group, which is never thinned.
func layersOf(rt *infer.Model, groups []graph.ChannelGroup) []Layer {
	member := func(param, role string) int {
		for g, cg := range groups {
			for _, mb := range cg.Members {
				if mb.Param == param && mb.Role == role {
					return g
				}
			}
		}
		return -1
	}
	out := make([]Layer, len(rt.Layers))
	for k, l := range rt.Layers {
		pl := Layer{Name: l.Name, Kind: l.Kind, Weighted: l.Weighted()}
		from := 0 // the group the first input carries
		if j := l.Inputs[0]; j >= 0 {
			from = out[j].Out
			pl.Follows = out[j].Name
			if !out[j].Weighted {
				pl.Follows = out[j].Follows
			}
		}
		pl.In, pl.Out = from, from
		if pl.Weighted {
			pl.Follows = ""
			switch g := member(l.Name, "pass"); {
			case g >= 0: // a depthwise convolution carries its group
				pl.In, pl.Out = g, g
			default:
				pl.In, pl.Out = max(member(l.Name, "in"), 0), max(member(l.Name, "out"), 0)
			}
		}
		out[k] = pl
	}
	return out
}

// colours gives each group 0 or 1 so that a weighted layer reads and
// writes groups of different colours wherever the network allows (a
// breadth-first two-colouring of the groups layers join; where an odd
// cycle makes it impossible, the layers that close it see equal colours).
func (p *Profile) colours() []int {
	adj := make([][]int, len(p.Groups))
	for _, l := range p.Layers {
		if l.Weighted && l.In != l.Out && p.Groups[l.In].Prunable && p.Groups[l.Out].Prunable {
			adj[l.In] = append(adj[l.In], l.Out)
			adj[l.Out] = append(adj[l.Out], l.In)
		}
	}
	colour := make([]int, len(p.Groups))
	seen := make([]bool, len(p.Groups))
	for s := range p.Groups {
		if seen[s] {
			continue
		}
		seen[s] = true
		queue := []int{s}
		for len(queue) > 0 {
			g := queue[0]
			queue = queue[1:]
			for _, h := range adj[g] {
				if !seen[h] {
					seen[h], colour[h] = true, 1-colour[g]
					queue = append(queue, h)
				}
			}
		}
	}
	return colour
}

// machine describes this machine and eng.
func machine(eng compute.Engine) Machine {
	m := Machine{Cores: runtime.NumCPU(), Arch: runtime.GOARCH, AVX512: cpu.X86.HasAVX512F, CPU: cpuName()}
	m.Host, _ = os.Hostname()
	if d, ok := eng.(compute.Describer); ok {
		info := d.Describe()
		m.BLAS, m.CoreType = info.BLAS, info.CoreType
	}
	return m
}

func threads(eng compute.Engine) int {
	if d, ok := eng.(compute.Describer); ok {
		return d.Describe().Threads
	}
	return 1
}

// cpuName is /proc/cpuinfo's model name ("" where there is none).
func cpuName() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func cmpSlice[T any](s, d []T) []T {
	if len(s) == 0 {
		return d
	}
	return s
}

func grid[T any](n int, zero func() T) [][]T {
	g := make([][]T, n)
	for i := range g {
		g[i] = make([]T, n)
		for j := range g[i] {
			g[i][j] = zero()
		}
	}
	return g
}
