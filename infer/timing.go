package infer

import (
	"slices"
	"time"
)

// LayerTimes runs x (a batch of batch samples) through the model reps times
// with a clock around each layer, then reps times without, and returns the
// median time of each layer (in Layers order; a convolution that finishes
// a residual addition holds the addition's time, the addition none) and
// the median time of a whole call. What the layers' times do not add up
// to is the call's own overhead (buffers, layout conversions between
// layers, the first layer's wake-up of the threads).
func (m *Model) LayerTimes(x []float32, batch, reps int) (layers []time.Duration, call time.Duration, err error) {
	reps = max(reps, 1)
	if _, err := m.Forward(x, batch); err != nil { // warm: buffers, code paths
		return nil, 0, err
	}
	per := make([][]time.Duration, len(m.Layers))
	m.clock = make([]time.Duration, len(m.Layers))
	for range reps {
		clear(m.clock)
		if _, err := m.Forward(x, batch); err != nil {
			m.clock = nil
			return nil, 0, err
		}
		for i, d := range m.clock {
			per[i] = append(per[i], d)
		}
	}
	m.clock = nil
	calls := make([]time.Duration, reps)
	for r := range calls {
		t0 := time.Now()
		m.Forward(x, batch)
		calls[r] = time.Since(t0)
	}
	layers = make([]time.Duration, len(m.Layers))
	for i, d := range per {
		layers[i] = median(d)
	}
	return layers, median(calls), nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
