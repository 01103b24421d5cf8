package compress

import (
	"fmt"
	"math"
	"slices"
	"sort"
)

// Granularity is the unit a mask keeps or removes.
type Granularity string

const (
	Element  Granularity = "element"  // single weights (unstructured)
	Rows     Granularity = "rows"     // linear output neurons
	Columns  Granularity = "columns"  // linear inputs
	Filters  Granularity = "filters"  // convolution output channels
	Channels Granularity = "channels" // convolution input channels
	NM       Granularity = "nm"       // at most N of every M consecutive weights along the input
	// Groups removes a convolution's output channels with everything that
	// depends on them (graph.ChannelGroups): the trainer's PrunePolicy
	// builds those masks from the network.
	DependencyGroups Granularity = "groups"
	// Heads removes attention heads: a head's rows of the q, k and v
	// projections (and their biases) and its columns of the output
	// projection (graph.Attention); the trainer builds those masks from the
	// network too.
	Heads Granularity = "heads"
)

// Granularities lists them for recipes.
var Granularities = []Granularity{Element, Rows, Columns, Filters, Channels, NM}

// Norm ranks structures.
type Norm string

const (
	L1 Norm = "l1"
	L2 Norm = "l2"
)

// Weight is a weight tensor as compression sees it: row-major data whose
// first dimension is the output (neurons or filters) and whose remaining
// dimensions are the reduction (inputs; for convolutions k·k·channels with
// the channel fastest).
type Weight struct {
	Name  string
	Shape []int
	Data  []float32
}

func (w Weight) rows() int { return w.Shape[0] }
func (w Weight) cols() int { return len(w.Data) / w.Shape[0] }

// channels is the innermost dimension of a convolution weight [F, k, k, C].
func (w Weight) channels() int { return w.Shape[len(w.Shape)-1] }

// Groups returns, for a structured granularity, the number of groups of w
// and the group of each element index: rows or columns of a linear weight,
// filters or channels of a convolution weight.
func Groups(w Weight, g Granularity) (int, func(i int) int, error) {
	conv := len(w.Shape) == 4
	cols := w.cols()
	switch {
	case g == Rows && !conv, g == Filters && conv:
		return w.rows(), func(i int) int { return i / cols }, nil
	case g == Columns && !conv:
		return cols, func(i int) int { return i % cols }, nil
	case g == Channels && conv:
		c := w.channels()
		return c, func(i int) int { return i % c }, nil
	}
	kind := "linear"
	if conv {
		kind = "convolution"
	}
	return 0, nil, fmt.Errorf("compress: %s is a %s weight %v; granularity %q does not apply (linear: rows, columns; convolution: filters, channels)", w.Name, kind, w.Shape, g)
}

// keepCount is how many of n units survive pruning a fraction s.
func pruneCount(n int, s float64) int {
	return min(n, int(math.Round(s*float64(n))))
}

// Magnitude returns the mask that prunes the fraction sparsity of w's
// smallest-magnitude weights (ties broken by position, so the mask is a pure
// function of the weights).
func Magnitude(w Weight, sparsity float64) []byte {
	return globalMagnitude([]Weight{w}, sparsity)[0]
}

// GlobalMagnitude prunes the fraction sparsity of all the weights together
// with one magnitude threshold, so layers end up with different sparsities.
func GlobalMagnitude(ws []Weight, sparsity float64) [][]byte {
	return globalMagnitude(ws, sparsity)
}

func globalMagnitude(ws []Weight, sparsity float64) [][]byte {
	total := 0
	for _, w := range ws {
		total += len(w.Data)
	}
	masks := make([][]byte, len(ws))
	mags := make([]float32, 0, total)
	for l, w := range ws {
		masks[l] = make([]byte, len(w.Data))
		for i, v := range w.Data {
			mags = append(mags, abs32(v))
			masks[l][i] = 1
		}
	}
	k := pruneCount(total, sparsity)
	if k == 0 {
		return masks
	}
	// The k-th smallest magnitude is the threshold: everything below it is
	// pruned, and of the weights equal to it, the first ones in (layer,
	// position) order until k are pruned — the same set as sorting by
	// (magnitude, layer, position) and cutting at k.
	thr := nthSmallest(mags, k-1)
	below := 0
	for _, w := range ws {
		for _, v := range w.Data {
			if abs32(v) < thr {
				below++
			}
		}
	}
	ties := k - below
	for l, w := range ws {
		for i, v := range w.Data {
			switch a := abs32(v); {
			case a < thr:
				masks[l][i] = 0
			case a == thr && ties > 0:
				masks[l][i] = 0
				ties--
			}
		}
	}
	return masks
}

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }

// nthSmallest returns the value that would be at index n of x sorted
// ascending. It reorders x (quickselect with a median-of-three pivot).
func nthSmallest(x []float32, n int) float32 {
	lo, hi := 0, len(x)-1
	for lo < hi {
		mid := lo + (hi-lo)/2
		// Order x[lo], x[mid], x[hi]; the median becomes the pivot.
		if x[mid] < x[lo] {
			x[mid], x[lo] = x[lo], x[mid]
		}
		if x[hi] < x[lo] {
			x[hi], x[lo] = x[lo], x[hi]
		}
		if x[hi] < x[mid] {
			x[hi], x[mid] = x[mid], x[hi]
		}
		pivot := x[mid]
		i, j := lo, hi
		for i <= j {
			for x[i] < pivot {
				i++
			}
			for x[j] > pivot {
				j--
			}
			if i <= j {
				x[i], x[j] = x[j], x[i]
				i++
				j--
			}
		}
		switch {
		case n <= j:
			hi = j
		case n >= i:
			lo = i
		default:
			return x[n]
		}
	}
	return x[n]
}

// Structured returns the mask that removes the fraction sparsity of w's
// groups (rows, columns, filters or channels) with the smallest norm.
func Structured(w Weight, g Granularity, norm Norm, sparsity float64) ([]byte, error) {
	n, groupOf, err := Groups(w, g)
	if err != nil {
		return nil, err
	}
	score := make([]float64, n)
	for i, v := range w.Data {
		if norm == L1 {
			score[groupOf(i)] += math.Abs(float64(v))
		} else {
			score[groupOf(i)] += float64(v) * float64(v)
		}
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return score[order[a]] < score[order[b]] })
	pruned := make([]bool, n)
	for _, gi := range order[:pruneCount(n, sparsity)] {
		pruned[gi] = true
	}
	mask := make([]byte, len(w.Data))
	for i := range mask {
		if !pruned[groupOf(i)] {
			mask[i] = 1
		}
	}
	return mask, nil
}

// NOfM returns the mask that keeps the n largest-magnitude weights of every
// m consecutive weights along each row's reduction dimension (2:4 is the
// pattern sparse tensor cores accelerate). A row whose length is not a
// multiple of m ends in a shorter group, which keeps at most n as well.
func NOfM(w Weight, n, m int) ([]byte, error) {
	if n < 0 || m <= 0 || n > m {
		return nil, fmt.Errorf("compress: %s: N:M needs 0 ≤ N ≤ M and M > 0, got %d:%d", w.Name, n, m)
	}
	cols := w.cols()
	mask := make([]byte, len(w.Data))
	idx := make([]int, 0, m)
	for r := 0; r < w.rows(); r++ {
		row := w.Data[r*cols : (r+1)*cols]
		for g := 0; g < cols; g += m {
			idx = idx[:0]
			for j := g; j < min(g+m, cols); j++ {
				idx = append(idx, j)
			}
			sort.SliceStable(idx, func(a, b int) bool { return math.Abs(float64(row[idx[a]])) > math.Abs(float64(row[idx[b]])) })
			for _, j := range idx[:min(n, len(idx))] {
				mask[r*cols+j] = 1
			}
		}
	}
	return mask, nil
}

// Apply zeroes data where mask is 0.
func Apply(mask []byte, data []float32) {
	data = data[:len(mask)]
	for i, keep := range mask {
		if keep == 0 {
			data[i] = 0
		}
	}
}

// Sparsity is the fraction of zeros in data.
func Sparsity(data []float32) float64 {
	if len(data) == 0 {
		return 0
	}
	z := 0
	for _, v := range data {
		if v == 0 {
			z++
		}
	}
	return float64(z) / float64(len(data))
}

// StructuredSparsity is the fraction of w's rows (linear) or filters
// (convolution) that are entirely zero: what thinning could remove.
func StructuredSparsity(w Weight) float64 {
	cols := w.cols()
	empty := 0
	for r := 0; r < w.rows(); r++ {
		if !slices.ContainsFunc(w.Data[r*cols:(r+1)*cols], func(v float32) bool { return v != 0 }) {
			empty++
		}
	}
	return float64(empty) / float64(w.rows())
}
