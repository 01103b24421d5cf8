package kernels

import "math"

// The sequence layers' arithmetic, which the training graph and the
// runtime share so that both compute the same bits.

// GELU is x·Φ(x), Φ the standard normal's distribution function (the
// erf form, PyTorch's default), in float32 (NormalParts).
func GELU(x float32) float32 {
	cdf, _ := NormalParts(x)
	return x * cdf
}

// GELUSlope is GELU's derivative Φ(x) + x·φ(x).
func GELUSlope(x float32) float32 {
	cdf, pdf := NormalParts(x)
	return cdf + x*pdf
}

// NormalParts returns the standard normal's distribution function Φ(x)
// and density φ(x) from one exponential: Φ through erf(|x|/√2) by
// Abramowitz and Stegun's 7.1.26 (absolute error below 1.5e-7), both in
// float32.
func NormalParts(x float32) (cdf, pdf float32) {
	z := x * (1 / math.Sqrt2)
	if z < 0 {
		z = -z
	}
	e := Exp(-z * z) // e^(−x²/2)
	t := 1 / (1 + 0.3275911*z)
	poly := t * (0.254829592 + t*(-0.284496736+t*(1.421413741+t*(-1.453152027+t*1.061405429))))
	half := 0.5 * (1 - poly*e) // erf(|x|/√2)/2
	if x < 0 {
		half = -half
	}
	return 0.5 + half, e * 0.3989422804014327 // 1/√(2π)
}

// Exp is e^x in float32 arithmetic: x = k·ln 2 + r with |r| ≤ ln 2/2 (k
// the nearest integer to x/ln 2), e^r
// by its Taylor polynomial to r⁷ (relative error below 1e-8 there), times
// 2^k through the exponent bits; 0 below −87.3, +Inf above 88.7.
func Exp(x float32) float32 {
	switch {
	case x != x:
		return x
	case x < -87.3:
		return 0
	case x > 88.7:
		return float32(math.Inf(1))
	}
	const round = 12582912 // 1.5·2²³: adding and subtracting it rounds to the nearest integer
	k := (x*1.442695040888963 + round) - round
	r := x - k*0.693145751953125 - k*1.428606765330187e-06 // ln 2 in two parts
	p := 1 + r*(1+r*(0.5+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720+r*(1.0/5040)))))))
	return math.Float32frombits(uint32(int32(math.Float32bits(p)) + int32(k)<<23))
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
// the rest become 0. The exponentials (Exp) are summed in float64.
func SoftmaxRow(s []float32, live int) {
	clear(s[live:])
	s = s[:live]
	m := s[0]
	for _, v := range s {
		m = max(m, v)
	}
	var z float64
	for j, v := range s {
		e := Exp(v - m)
		s[j] = e
		z += float64(e)
	}
	inv := float32(1 / z)
	for j := range s {
		s[j] *= inv
	}
}
