package infer

import "github.com/lathe-ml/lathe/data"

// Predict returns the runtime's top-1 class for every sample of a set (for
// every position of a language model's, in order),
// feeding it in batches of the given size (the last one partial).
func Predict(m *Model, set *data.Set, batch int) ([]int, error) {
	f, per := set.Features(), set.LabelsPer()
	x := make([]float32, batch*f)
	labels := make([]float32, batch*per)
	b := data.Batcher{Set: set}
	out := make([]int, 0, set.Len())
	idx := make([]int, 0, batch)
	for lo := 0; lo < set.Len(); lo += batch {
		hi := min(lo+batch, set.Len())
		idx = idx[:0]
		for i := lo; i < hi; i++ {
			idx = append(idx, i)
		}
		n := len(idx)
		b.Fill(x[:n*f], labels[:n*per], idx, 0)
		logits, err := m.Forward(x[:n*f], n)
		if err != nil {
			return nil, err
		}
		for s := 0; s < n*per; s++ { // a sample's, or each of its positions' classes
			row := logits[s*m.Classes : (s+1)*m.Classes]
			best := 0
			for j, v := range row {
				if v > row[best] {
					best = j
				}
			}
			out = append(out, best)
		}
	}
	return out, nil
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
