package compress

import (
	"fmt"
	"slices"
)

// KMeans clusters one-dimensional values into k shared values (Deep
// Compression's weight sharing): centroids start evenly spaced between the
// smallest and largest value (the linear initialisation Deep Compression
// found best, since it keeps a few large weights represented), then Lloyd
// iterations move them to their members' means. It returns the centroids
// and each value's cluster. The result is a pure function of the input.
func KMeans(values []float32, k, iters int) (centroids []float32, assign []uint8, err error) {
	if k < 2 || k > 255 {
		return nil, nil, fmt.Errorf("compress: %d clusters; k must be 2 to 255", k)
	}
	assign = make([]uint8, len(values))
	if len(values) == 0 {
		return make([]float32, k), assign, nil
	}
	lo, hi := slices.Min(values), slices.Max(values)
	centroids = make([]float32, k)
	for c := range centroids {
		centroids[c] = lo + (hi-lo)*float32(c)/float32(k-1)
	}
	sums := make([]float64, k)
	counts := make([]int, k)
	for it := 0; it < iters; it++ {
		changed := AssignNearest(centroids, values, assign)
		clear(sums)
		clear(counts)
		for i, v := range values {
			sums[assign[i]] += float64(v)
			counts[assign[i]]++
		}
		for c := range centroids {
			if counts[c] > 0 {
				centroids[c] = float32(sums[c] / float64(counts[c]))
			}
		}
		if it > 0 && !changed {
			break
		}
	}
	AssignNearest(centroids, values, assign)
	return centroids, assign, nil
}

// AssignNearest sets each value's cluster to its nearest centroid (the
// lowest index on ties) and reports whether any changed. Centroids stay
// sorted under Lloyd iterations from a sorted start, so a binary search
// finds the neighbours.
func AssignNearest(centroids, values []float32, assign []uint8) bool {
	changed := false
	for i, v := range values {
		j, _ := slices.BinarySearch(centroids, v)
		best := j
		if j >= len(centroids) || (j > 0 && v-centroids[j-1] <= centroids[j]-v) {
			best = j - 1
		}
		// Equal centroids: the lowest index wins.
		for best > 0 && centroids[best-1] == centroids[best] {
			best--
		}
		if uint8(best) != assign[i] {
			assign[i], changed = uint8(best), true
		}
	}
	return changed
}
