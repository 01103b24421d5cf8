package regularizers

import (
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/compress"
)

// Kinds a recipe can name.
var Kinds = []string{"group_lasso", "l1", "l2"}

// GroupLassoProx applies the group soft-threshold to w in place: each group
// g is scaled by max(0, 1 − t·√|g| / ‖w_g‖₂), so its norm shrinks by
// t·√|g| (the group-size weighting of Yuan and Lin) and a group whose norm
// is at most that becomes exactly zero. t is the step size times the
// strength. It returns the number of groups that are zero afterwards.
func GroupLassoProx(w compress.Weight, g compress.Granularity, t float64) (int, error) {
	norm2, size, groupOf, err := groupNorms(w, g)
	if err != nil {
		return 0, err
	}
	scale := make([]float32, len(norm2))
	zero := 0
	for gi := range scale {
		norm := math.Sqrt(norm2[gi])
		thr := t * math.Sqrt(float64(size[gi]))
		if norm <= thr {
			zero++
			continue
		}
		scale[gi] = float32(1 - thr/norm)
	}
	for i := range w.Data {
		w.Data[i] *= scale[groupOf(i)]
	}
	return zero, nil
}

// groupNorms returns each group's squared L2 norm and size, and the group
// of each element.
func groupNorms(w compress.Weight, g compress.Granularity) ([]float64, []int, func(int) int, error) {
	n, groupOf, err := compress.Groups(w, g)
	if err != nil {
		return nil, nil, nil, err
	}
	norm2 := make([]float64, n)
	size := make([]int, n)
	for i, v := range w.Data {
		gi := groupOf(i)
		norm2[gi] += float64(v) * float64(v)
		size[gi]++
	}
	return norm2, size, groupOf, nil
}

// GroupLassoPenalty is Σ_g √|g|·‖w_g‖₂.
func GroupLassoPenalty(w compress.Weight, g compress.Granularity) (float64, error) {
	norm2, size, _, err := groupNorms(w, g)
	if err != nil {
		return 0, err
	}
	var p float64
	for gi := range norm2 {
		p += math.Sqrt(float64(size[gi])) * math.Sqrt(norm2[gi])
	}
	return p, nil
}

// L1Prox soft-thresholds every weight by t: w ← sign(w)·max(0, |w| − t).
func L1Prox(data []float32, t float64) {
	tt := float32(t)
	for i, v := range data {
		switch {
		case v > tt:
			data[i] = v - tt
		case v < -tt:
			data[i] = v + tt
		default:
			data[i] = 0
		}
	}
}

// L1Penalty is Σ|w|.
func L1Penalty(data []float32) float64 {
	var p float64
	for _, v := range data {
		p += math.Abs(float64(v))
	}
	return p
}

// L2Grad adds the gradient of ½λ‖w‖² (λ·w) to grad and returns the penalty.
func L2Grad(grad, data []float32, lambda float64) float64 {
	l := float32(lambda)
	var p float64
	for i, v := range data {
		grad[i] += l * v
		p += float64(v) * float64(v)
	}
	return 0.5 * lambda * p
}

// Validate checks a strength.
func Validate(kind string, strength float64) error {
	if !(strength >= 0) || math.IsInf(strength, 0) {
		return fmt.Errorf("regularizers: %s strength %v must be a finite number ≥ 0", kind, strength)
	}
	return nil
}
