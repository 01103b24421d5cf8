package infer

import (
	"math"
	"slices"
	"time"
)

// LayerTimes runs x (a batch of batch samples) through the model reps
// times with a clock around each layer and reps times without, in five
// alternating rounds, and returns each layer's time (in Layers order; a
// convolution that finishes a residual addition holds the addition's
// time, the addition none) and a whole call's: the least over the rounds
// of each round's median. A shared machine has slow spells of a fraction
// of a second (another tenant, a frequency change); the least median is
// the time the model takes outside them. What the layers' times do not
// add up to is the call's own overhead (buffers, layout conversions
// between layers, the first layer's wake-up of the threads).
func (m *Model) LayerTimes(x []float32, batch, reps int) (layers []time.Duration, call time.Duration, err error) {
	const rounds = 5
	per := max(reps/rounds, 1)
	if _, err := m.Forward(x, batch); err != nil { // warm: buffers, code paths
		return nil, 0, err
	}
	layers = make([]time.Duration, len(m.Layers))
	for i := range layers {
		layers[i] = time.Duration(math.MaxInt64)
	}
	call = time.Duration(math.MaxInt64)
	each := make([][]time.Duration, len(m.Layers))
	calls := make([]time.Duration, per)
	defer func() { m.clock = nil }()
	for range rounds {
		m.clock = make([]time.Duration, len(m.Layers))
		for i := range each {
			each[i] = each[i][:0]
		}
		for range per {
			clear(m.clock)
			if _, err := m.Forward(x, batch); err != nil {
				return nil, 0, err
			}
			for i, d := range m.clock {
				each[i] = append(each[i], d)
			}
		}
		m.clock = nil
		for r := range calls {
			t0 := time.Now()
			m.Forward(x, batch)
			calls[r] = time.Since(t0)
		}
		for i, d := range each {
			layers[i] = min(layers[i], median(d))
		}
		call = min(call, median(calls))
	}
	return layers, call, nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
