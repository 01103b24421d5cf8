package infer

import (
	"math"

	"github.com/lathe-ml/lathe/data"
)

// Predict returns the runtime's top-1 class for every sample of a set (for
// every position of a language model's, in order),
// feeding it in batches of the given size (the last one partial).
func Predict(m *Model, set *data.Set, batch int) ([]int, error) {
	out := make([]int, 0, set.Len())
	err := forward(m, set, batch, func(logits []float32, rows int) {
		for s := range rows { // a sample's, or each of its positions' classes
			out = append(out, top(logits[s*m.Classes:(s+1)*m.Classes], nil))
		}
	})
	return out, err
}

// forward runs a set through m in batches of the given size and hands fn
// each batch's logits and their rows (samples times labels per sample).
func forward(m *Model, set *data.Set, batch int, fn func(logits []float32, rows int)) error {
	f, per := set.Features(), set.LabelsPer()
	x := make([]float32, batch*f)
	labels := make([]float32, batch*per)
	b := data.Batcher{Set: set}
	idx := make([]int, 0, batch)
	for lo := 0; lo < set.Len(); lo += batch {
		idx = idx[:0]
		for i := lo; i < min(lo+batch, set.Len()); i++ {
			idx = append(idx, i)
		}
		n := len(idx)
		b.Fill(x[:n*f], labels[:n*per], idx, 0)
		logits, err := m.Forward(x[:n*f], n)
		if err != nil {
			return err
		}
		fn(logits, n*per)
	}
	return nil
}

// top is the index of row's largest value, each shifted by its offset
// (nil: none); the first on a tie.
func top(row []float32, offsets []float64) int {
	best, bv := 0, math.Inf(-1)
	for j, v := range row {
		f := float64(v)
		if offsets != nil {
			f += offsets[j]
		}
		if f > bv {
			best, bv = j, f
		}
	}
	return best
}

// Accuracy is the share of a set's labels (every position's, for a
// language model) that Predict gets right.
func Accuracy(m *Model, set *data.Set, batch int) (float64, error) {
	pred, err := Predict(m, set, batch)
	if err != nil {
		return 0, err
	}
	right := 0
	for i, c := range pred {
		if int(set.Labels[i]) == c {
			right++
		}
	}
	return float64(right) / float64(max(len(pred), 1)), nil
}
