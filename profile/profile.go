// Package profile measures what a network's layers cost on this machine
// under each compression setting a search may give them, and predicts a
// whole configuration's latency from those measurements.
//
// A setting has two parts. Each channel group (graph.ChannelGroups: the
// channels that stand or fall together across batch norms and residual
// additions) keeps a fraction of its channels — one of the profile's
// Widths; each weighted layer stores its weights in one Format: dense,
// unstructured sparse at a given sparsity, or 2:4; and the network runs in
// float or, quantized, on the runtime's integer kernels (every weight in 8
// or fewer bits, each quantized layer's input in 8 bits, as
// quantization-aware training leaves a network). Quantization is one
// choice for the whole network because an integer kernel needs its input
// quantized by the layer before it; a weight's bit width (8 or 4) changes
// its bytes, not its kernel. A layer's time depends on the precision, its
// own format and the widths of two groups: the one it reads and the one
// it writes.
//
// Measure builds whole variant networks — every layer in one format, at
// one precision, the groups at a pair of widths — loads each into the inference runtime
// (which picks its fastest kernel per layer, as it would for the real
// model) and times every layer inside a real forward pass
// (infer.Model.LayerTimes). The groups are coloured in two colours so that
// every layer reads and writes groups of different colours where the
// network allows, and the colours take every pair of widths: each layer
// is then measured at every pair of widths it can see. Predict adds up a
// configuration's layers from the table, plus the forward pass's own
// overhead (what the layers' times do not cover). A profile is JSON: one
// measured on the deployment machine can be carried to the machine that
// searches, and is used there as written.
package profile

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Version is the profile file format's version.
const Version = 1

// Profile is a network's layer latencies under each setting, measured on
// one machine at one batch size and thread count.
type Profile struct {
	Version int       `json:"version"`
	Model   string    `json:"model"` // the model file profiled
	Machine Machine   `json:"machine"`
	Date    time.Time `json:"date"`
	Batch   int       `json:"batch"`
	Threads int       `json:"threads"`
	// Widths are the fractions of its channels a group may keep, largest
	// first; the first is 1 (the whole group).
	Widths     []float64 `json:"widths"`
	Formats    []string  `json:"formats"`
	Precisions []string  `json:"precisions"` // Float, Int8
	Groups     []Group   `json:"groups"`
	Layers     []Layer   `json:"layers"`
	// OverheadUs is a forward call's time beyond its layers' (the mean
	// over the variants measured); DenseUs the dense network's whole call.
	OverheadUs float64 `json:"overhead_us"`
	DenseUs    float64 `json:"dense_us"`
	// OverheadBytes is a model file's bytes beyond its weights and biases
	// (the state, the layer table, batch norms), DenseBytes the dense
	// model file's.
	OverheadBytes float64 `json:"overhead_bytes"`
	DenseBytes    float64 `json:"dense_bytes"`
	// The runtime's memory (infer.Model.Bytes after a forward call at the
	// batch: parameters in their kernels' layouts, activation buffers and
	// scratch) is predicted as OverheadMemory plus each layer's Memory;
	// ActivationShare is the share of a layer's output buffer its Memory
	// counts (the runtime reuses buffers), both fitted over the variants.
	// DenseMemory is the dense network's, measured. Zero in a profile
	// measured before lathe recorded memory.
	OverheadMemory  float64 `json:"overhead_memory_bytes,omitempty"`
	ActivationShare float64 `json:"activation_share,omitempty"`
	DenseMemory     float64 `json:"dense_memory_bytes,omitempty"`
	// Variants are the networks measured, each with its whole call's
	// measured time and the time Predict gives it from the table.
	Variants []Variant `json:"variants"`
}

// Machine says where a profile was measured.
type Machine struct {
	CPU      string `json:"cpu"`
	Cores    int    `json:"cores"`
	Arch     string `json:"arch"`
	BLAS     string `json:"blas"`
	CoreType string `json:"blas_core_type,omitempty"`
	AVX512   bool   `json:"avx512"`
	Host     string `json:"host,omitempty"`
}

// Group is one channel group.
type Group struct {
	Channels int  `json:"channels"`
	Prunable bool `json:"prunable"`
	// Producers name the layers whose outputs are the group's channels.
	Producers []string `json:"producers"`
}

// Layer is one layer of the runtime's network and its measured times.
type Layer struct {
	Name     string `json:"name"`
	Kind     string `json:"kind"`
	Weighted bool   `json:"weighted"`
	// In and Out are the groups the layer reads and writes (the same for
	// a layer without weights: pooling, additions, norms).
	In  int `json:"in_group"`
	Out int `json:"out_group"`
	// Follows is, for a layer without weights, the weighted layer whose
	// format decides its inputs' (quantized or not); "" for the input.
	Follows string `json:"follows,omitempty"`
	// Us[Key(precision, format)][i][j] is the layer's time in µs with its
	// input group at Widths[i] and its output group at Widths[j]; -1
	// where not measured.
	Us map[string][][]float64 `json:"us"`
	// Bytes, laid out as Us, are the bytes its weight and bias take in
	// the model file (8-bit codes at int8; under Key4, the int8
	// variants' with every weight in 4 bits); nil for a layer without
	// weights.
	Bytes map[string][][]float64 `json:"bytes,omitempty"`
	// Memory, laid out as Us, is the runtime memory the layer adds: its
	// parameters as its kernels hold them and ActivationShare of its
	// output buffer at the batch.
	Memory map[string][][]float64 `json:"memory,omitempty"`
}

// Variant is one measured network.
type Variant struct {
	Format      string    `json:"format"`
	Precision   string    `json:"precision"`
	Keep        []float64 `json:"keep"` // per group
	MeasuredUs  float64   `json:"measured_us"`
	PredictedUs float64   `json:"predicted_us"`
	Bytes       int       `json:"bytes"` // its model file's
	// Memory is the runtime's memory after its forward calls, and
	// PredictedMemory the table's prediction of it.
	Memory          int     `json:"memory_bytes,omitempty"`
	PredictedMemory float64 `json:"predicted_memory_bytes,omitempty"`
	// Remeasured: the first measurement was 15 % off the prediction and
	// the variant was timed again (MeasuredUs is the lesser).
	Remeasured bool `json:"remeasured,omitempty"`
}

// Config is one compression setting of a whole network.
type Config struct {
	// Keep is each group's kept fraction of channels, one of the
	// profile's Widths (1 for a group that is not prunable); nil keeps
	// every channel.
	Keep []float64 `json:"keep"`
	// Format is each weighted layer's; a layer not named stays dense.
	Format map[string]string `json:"format"`
	// Int8 runs the network on integer kernels: every weight quantized
	// (to Bits[layer], 8 where not named), the inputs of weighted layers
	// to 8 bits.
	Int8 bool           `json:"int8,omitempty"`
	Bits map[string]int `json:"bits,omitempty"`
}

// Precision is the configuration's precision name.
func (c Config) Precision() string {
	if c.Int8 {
		return Int8
	}
	return Float
}

// Format and precision names.
const (
	Dense = "dense"
	NM24  = "2:4"
	Float = "float"
	Int8  = "int8"
)

// Key4 names the sizes of a format's weights in 4-bit codes (integer
// kernels; their latency is int8's).
func Key4(format string) string { return "int4:" + format }

// Key names a precision's and format's table.
func Key(precision, format string) string {
	if precision == Float {
		return format
	}
	return precision + ":" + format
}

// Sparse is the name of the unstructured format at a sparsity.
func Sparse(s float64) string { return "sparse-" + strconv.FormatFloat(s, 'g', -1, 64) }

// DefaultFormats are those Measure profiles when none are asked for.
var DefaultFormats = []string{Dense, Sparse(0.5), Sparse(0.7), Sparse(0.8), Sparse(0.9), Sparse(0.95), NM24}

// DefaultPrecisions are those Measure profiles when none are asked for.
var DefaultPrecisions = []string{Float, Int8}

// DefaultWidths are the kept fractions Measure profiles when none are
// asked for.
var DefaultWidths = []float64{1, 0.75, 0.5, 0.25}

// format is a parsed format name.
type format struct {
	sparsity float64 // unstructured
	nm       bool    // 2:4
}

func parseFormat(s string) (format, error) {
	switch s {
	case Dense:
		return format{}, nil
	case NM24:
		return format{nm: true}, nil
	}
	if v, ok := strings.CutPrefix(s, "sparse-"); ok {
		if f, err := strconv.ParseFloat(v, 64); err == nil && f > 0 && f < 1 {
			return format{sparsity: f}, nil
		}
	}
	return format{}, fmt.Errorf("profile: format %q: want dense, sparse-S (0 < S < 1) or 2:4", s)
}

// checkWidths refuses widths that do not start at 1 and fall.
func checkWidths(ws []float64) error {
	if len(ws) == 0 || ws[0] != 1 {
		return fmt.Errorf("profile: widths %v: the first must be 1 (the whole group)", ws)
	}
	for i := 1; i < len(ws); i++ {
		if !(ws[i] > 0 && ws[i] < ws[i-1]) {
			return fmt.Errorf("profile: widths %v: each in (0, 1], falling", ws)
		}
	}
	return nil
}

// PredictBytes is a configuration's model file bytes from the table: its
// weighted layers' bytes at their formats, precision, bit widths and
// widths, plus the file's other bytes.
func (p *Profile) PredictBytes(c Config) (float64, error) {
	total := p.OverheadBytes
	err := p.walk(c, func(l *Layer, key string, i, j int) error {
		if !l.Weighted || l.Bytes == nil {
			return nil
		}
		if c.Int8 && c.Bits[l.Name] == 4 {
			key = Key4(cmp.Or(c.Format[l.Name], Dense))
		}
		t := l.Bytes[key]
		if t == nil {
			return fmt.Errorf("profile: layer %s has no sizes for %s", l.Name, key)
		}
		v := t[i][j]
		if v < 0 {
			v = math.Sqrt(math.Max(t[i][i], 0) * math.Max(t[j][j], 0))
		}
		total += v
		return nil
	})
	if err != nil {
		return 0, err
	}
	return total, nil
}

// PredictMemory is a configuration's runtime memory from the table: each
// layer's at its format, precision and widths, plus the overhead.
func (p *Profile) PredictMemory(c Config) (float64, error) {
	if !p.HasMemory() {
		return 0, fmt.Errorf("profile: measured without memory tables (an older lathe): measure it again for a memory budget")
	}
	total := p.OverheadMemory
	err := p.walk(c, func(l *Layer, key string, i, j int) error {
		t := l.Memory[key]
		if t == nil {
			return fmt.Errorf("profile: layer %s has no memory for %s", l.Name, key)
		}
		total += cell(t, i, j)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return total, nil
}

// HasMemory says whether the profile predicts runtime memory.
func (p *Profile) HasMemory() bool { return p.DenseMemory > 0 }

// Predict is a configuration's latency in µs from the table: each
// layer's time at its format and its groups' widths, plus the call's
// overhead. A pair of widths a layer was not measured at (its groups
// share a colour) is estimated as the geometric mean of the two equal
// pairs around it.
func (p *Profile) Predict(c Config) (float64, error) {
	total := p.OverheadUs
	err := p.walk(c, func(l *Layer, key string, i, j int) error {
		t, err := l.at(key, i, j)
		total += t
		return err
	})
	if err != nil {
		return 0, err
	}
	return total, nil
}

// walk checks a configuration against the profile and calls visit with
// each layer's table key and width indexes (input, output).
func (p *Profile) walk(c Config, visit func(l *Layer, key string, i, j int) error) error {
	if c.Keep != nil && len(c.Keep) != len(p.Groups) {
		return fmt.Errorf("profile: a configuration of %d groups for a network of %d", len(c.Keep), len(p.Groups))
	}
	width := func(g int) (int, error) {
		if c.Keep == nil {
			return 0, nil
		}
		i := slices.Index(p.Widths, c.Keep[g])
		if i < 0 || (i > 0 && !p.Groups[g].Prunable) {
			return 0, fmt.Errorf("profile: group %d (of %v) keeps %g, not one of the widths %v it may keep", g, p.Groups[g].Producers, c.Keep[g], p.Widths)
		}
		return i, nil
	}
	weighted := map[string]bool{}
	for _, l := range p.Layers {
		weighted[l.Name] = l.Weighted
	}
	for name, f := range c.Format {
		if !weighted[name] {
			return fmt.Errorf("profile: format for %q, not a weighted layer of the profiled network", name)
		}
		if !slices.Contains(p.Formats, f) {
			return fmt.Errorf("profile: layer %s: format %q was not profiled (%v)", name, f, p.Formats)
		}
	}
	if !slices.Contains(p.Precisions, c.Precision()) {
		return fmt.Errorf("profile: precision %s was not profiled (%v)", c.Precision(), p.Precisions)
	}
	for k := range p.Layers {
		l := &p.Layers[k]
		f := Dense
		if l.Weighted {
			f = cmp.Or(c.Format[l.Name], Dense)
		} else if l.Follows != "" {
			f = cmp.Or(c.Format[l.Follows], Dense)
		}
		i, err := width(l.In)
		if err != nil {
			return err
		}
		j, err := width(l.Out)
		if err != nil {
			return err
		}
		if err := visit(l, Key(c.Precision(), f), i, j); err != nil {
			return err
		}
	}
	return nil
}

// at is the layer's time at a format and widths i (input) and j (output).
func (l *Layer) at(f string, i, j int) (float64, error) {
	t := l.Us[f]
	if t == nil {
		return 0, fmt.Errorf("profile: layer %s has no times for format %s", l.Name, f)
	}
	if v := t[i][j]; v >= 0 {
		return v, nil
	}
	a, b := t[i][i], t[j][j]
	if a < 0 || b < 0 {
		return 0, fmt.Errorf("profile: layer %s, format %s: widths %d and %d not measured", l.Name, f, i, j)
	}
	return math.Sqrt(a * b), nil
}

// Read reads a profile file, checking its version and shape.
func Read(path string) (*Profile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	var p Profile
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("profile: %s: %w", path, err)
	}
	if p.Version != Version {
		return nil, fmt.Errorf("profile: %s: format version %d, this build reads %d", path, p.Version, Version)
	}
	if err := p.check(); err != nil {
		return nil, fmt.Errorf("profile: %s: %w", path, err)
	}
	return &p, nil
}

// check refuses a profile whose tables do not match its widths, formats
// and groups.
func (p *Profile) check() error {
	if err := checkWidths(p.Widths); err != nil {
		return err
	}
	n := len(p.Widths)
	for _, l := range p.Layers {
		if l.In < 0 || l.In >= len(p.Groups) || l.Out < 0 || l.Out >= len(p.Groups) {
			return fmt.Errorf("layer %s: groups %d, %d of %d", l.Name, l.In, l.Out, len(p.Groups))
		}
		for _, key := range p.keys() {
			t, f := l.Us[key], key
			if len(t) != n {
				return fmt.Errorf("layer %s, format %s: %d rows of times for %d widths", l.Name, f, len(t), n)
			}
			for _, r := range t {
				if len(r) != n {
					return fmt.Errorf("layer %s, format %s: a row of %d times for %d widths", l.Name, f, len(r), n)
				}
			}
		}
	}
	return nil
}

// Write writes the profile as indented JSON.
func (p *Profile) Write(path string) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Random is a configuration drawn from the profile's settings: each
// prunable group at one of the widths, each weighted layer in one of the
// formats (to check predictions against measurements).
func (p *Profile) Random(r *rand.Rand) Config {
	c := Config{Keep: make([]float64, len(p.Groups)), Format: map[string]string{}}
	for g := range c.Keep {
		c.Keep[g] = 1
		if p.Groups[g].Prunable {
			c.Keep[g] = p.Widths[r.IntN(len(p.Widths))]
		}
	}
	for _, l := range p.Layers {
		if l.Weighted {
			c.Format[l.Name] = p.Formats[r.IntN(len(p.Formats))]
		}
	}
	c.Int8 = p.Precisions[r.IntN(len(p.Precisions))] == Int8
	return c
}

// keys are the tables every layer has: each precision's each format.
func (p *Profile) keys() []string {
	var k []string
	for _, pr := range p.Precisions {
		for _, f := range p.Formats {
			k = append(k, Key(pr, f))
		}
	}
	return k
}

// sizeKeys are the size tables a weighted layer has: each table's, and
// each format's in 4-bit codes where integer kernels were profiled.
func (p *Profile) sizeKeys() []string {
	k := p.keys()
	if slices.Contains(p.Precisions, Int8) {
		for _, f := range p.Formats {
			k = append(k, Key4(f))
		}
	}
	return k
}

// checkPrecision refuses a precision name lathe does not know.
func checkPrecision(s string) error {
	if s != Float && s != Int8 {
		return fmt.Errorf("profile: precision %q: want float or int8", s)
	}
	return nil
}
