package infer

import (
	"errors"
	"math"

	"github.com/lathe-ml/lathe/data"
)

// Macro is the macro accuracy of logits (n samples of classes values)
// shifted by offsets (nil: none) against their labels — the mean of the
// recalls of the classes present — and each class's recall (NaN for a
// class without samples).
func Macro(logits []float32, labels []byte, classes int, offsets []float64) (float64, []float64) {
	right, count := make([]float64, classes), make([]float64, classes)
	for s, y := range labels {
		count[y]++
		if top(logits[s*classes:(s+1)*classes], offsets) == int(y) {
			right[y]++
		}
	}
	m, present, recall := 0.0, 0, make([]float64, classes)
	for j := range classes {
		recall[j] = math.NaN()
		if count[j] > 0 {
			recall[j] = right[j] / count[j]
			m += recall[j]
			present++
		}
	}
	return m / float64(max(present, 1)), recall
}

// Logits are a classifier's logits for every sample of a set, in batches
// of the given size.
func Logits(m *Model, set *data.Set, batch int) ([]float32, error) {
	if set.LabelsPer() != 1 {
		return nil, errors.New("infer: logits of a classifier (one label per sample), not a language model's")
	}
	out := make([]float32, 0, set.Len()*m.Classes)
	err := forward(m, set, batch, func(logits []float32, _ int) { out = append(out, logits...) })
	return out, err
}

// Top1 is the accuracy of logits shifted by offsets (nil: none).
func Top1(logits []float32, labels []byte, classes int, offsets []float64) float64 {
	right := 0
	for s, y := range labels {
		if top(logits[s*classes:(s+1)*classes], offsets) == int(y) {
			right++
		}
	}
	return float64(right) / float64(max(len(labels), 1))
}

// ClassOffsets are per-class offsets to add to a classifier's logits that
// maximize its macro accuracy on the samples given (a validation split):
// coordinate ascent over offsets in [−2, 2] in steps of 0.02, four rounds,
// the offset nearer 0 kept on a tie. Adding them to the output layer's
// bias moves its decision boundaries toward the classes it under-predicts
// (post-hoc logit adjustment, tuned for the balanced metric).
func ClassOffsets(logits []float32, labels []byte, classes int) []float64 {
	off := make([]float64, classes)
	const span, step = 2.0, 0.02
	for range 4 {
		for j := range classes {
			best, bm := off[j], -1.0
			for k := -int(span / step); k <= int(span/step); k++ {
				d := float64(k) * step
				was := off[j]
				off[j] = d
				m, _ := Macro(logits, labels, classes, off)
				off[j] = was
				if m > bm+1e-12 || (math.Abs(m-bm) <= 1e-12 && math.Abs(d) < math.Abs(best)) {
					best, bm = d, m
				}
			}
			off[j] = best
		}
	}
	return off
}
