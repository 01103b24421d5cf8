package kernels

import "math"

// The sequence layers' arithmetic, which the training graph and the
// runtime share so that both compute the same bits.

// GELU is x·Φ(x), Φ the standard normal's distribution function (the
// exact form, PyTorch's default), computed in float64.
func GELU(x float32) float32 {
	v := float64(x)
	return float32(0.5 * v * (1 + math.Erf(v/math.Sqrt2)))
}

// LayerNorm normalizes one position's values x into y: x̂ = (x − μ)·inv,
// y = x̂·γ + β, μ and the (biased) variance summed in float64, inv =
// 1/√(σ² + eps) rounded to float32 once. It stores x̂ in xhat unless nil and
// returns inv.
func LayerNorm(y, xhat, x, gamma, beta []float32, eps float64) float32 {
	var sum float64
	for _, v := range x {
		sum += float64(v)
	}
	mu := sum / float64(len(x))
	var ss float64
	for _, v := range x {
		e := float64(v) - mu
		ss += e * e
	}
	inv := float32(1 / math.Sqrt(ss/float64(len(x))+eps))
	m := float32(mu)
	y, gamma, beta = y[:len(x)], gamma[:len(x)], beta[:len(x)]
	for j, v := range x {
		h := (v - m) * inv
		if xhat != nil {
			xhat[j] = h
		}
		y[j] = h*gamma[j] + beta[j]
	}
	return inv
}

// SoftmaxRow turns a row of attention scores into probabilities in place,
// over its first live entries (a causal row's positions up to its own);
// the rest become 0. The exponentials are summed in float64.
func SoftmaxRow(s []float32, live int) {
	clear(s[live:])
	s = s[:live]
	m := s[0]
	for _, v := range s {
		m = max(m, v)
	}
	var z float64
	for j, v := range s {
		e := math.Exp(float64(v - m))
		s[j] = float32(e)
		z += e
	}
	inv := float32(1 / z)
	for j := range s {
		s[j] *= inv
	}
}
