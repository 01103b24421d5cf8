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

// GELUPass sets y = GELU(x) element-wise, or with dy (not nil) the
// gradient y = dy·GELUSlope(x): AVX-512 where the CPU has it, the same
// float32 operations in the same order (hence the same bits) in Go
// elsewhere and for a tail of fewer than 16.
func GELUPass(y, x, dy []float32) {
	n := len(y)
	x = x[:n]
	done := 0
	if hasDirect && n >= 16 {
		done = n &^ 15
		var d *float32
		if dy != nil {
			d = &dy[0]
		}
		geluPass(&y[0], &x[0], d, done, &geluK)
	}
	for i := done; i < n; i++ {
		if dy == nil {
			y[i] = GELU(x[i])
		} else {
			y[i] = dy[i] * GELUSlope(x[i])
		}
	}
}

// Sigmoid is 1/(1 + e^−x) in float32 (Exp).
func Sigmoid(x float32) float32 { return 1 / (1 + Exp(-x)) }

// SigmoidPass sets y = sigmoid(x) element-wise, or with dy (not nil) the
// gradient y = dy·s(1 − s).
func SigmoidPass(y, x, dy []float32) {
	for i := range y {
		s := Sigmoid(x[i])
		if dy == nil {
			y[i] = s
		} else {
			y[i] = dy[i] * (s * (1 - s))
		}
	}
}

// SiLUPass sets y = x·sigmoid(x) element-wise, or with dy (not nil) the
// gradient y = dy·s(1 + x(1 − s)).
func SiLUPass(y, x, dy []float32) {
	for i := range y {
		v := x[i]
		s := Sigmoid(v)
		if dy == nil {
			y[i] = v * s
		} else {
			y[i] = dy[i] * (s * (1 + v*(1-s)))
		}
	}
}

// The constants NormalParts and Exp compute with, as float32, in the
// order geluPass reads them.
const (
	rsqrt2   = 1 / math.Sqrt2
	asP      = 0.3275911 // Abramowitz and Stegun 7.1.26
	asA1     = 0.254829592
	asA2     = -0.284496736
	asA3     = 1.421413741
	asA4     = -1.453152027
	asA5     = 1.061405429
	rsqrt2pi = 0.3989422804014327 // 1/√(2π)
	log2e    = 1.442695040888963
	expRound = 12582912 // 1.5·2²³: adding and subtracting it rounds to the nearest integer
	ln2Hi    = 0.693145751953125
	ln2Lo    = 1.428606765330187e-06
	expLow   = -87.3
)

var geluK = [...]float32{rsqrt2, asP, asA1, asA2, asA3, asA4, asA5, rsqrt2pi, log2e, expRound, ln2Hi, ln2Lo, expLow,
	1, 0.5, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040}

// NormalParts returns the standard normal's distribution function Φ(x)
// and density φ(x) from one exponential: Φ through erf(|x|/√2) by
// Abramowitz and Stegun's 7.1.26 (absolute error below 1.5e-7), both in
// float32.
func NormalParts(x float32) (cdf, pdf float32) {
	z := x * rsqrt2
	if z < 0 {
		z = -z
	}
	e := Exp(-z * z) // e^(−x²/2)
	t := 1 / (1 + asP*z)
	poly := t * (asA1 + t*(asA2+t*(asA3+t*(asA4+t*asA5))))
	half := 0.5 * (1 - poly*e) // erf(|x|/√2)/2
	if x < 0 {
		half = -half
	}
	return 0.5 + half, e * rsqrt2pi
}

// Exp is e^x in float32 arithmetic: x = k·ln 2 + r with |r| ≤ ln 2/2 (k
// the nearest integer to x/ln 2), e^r by its Taylor polynomial to r⁷
// (relative error below 1e-8 there), times 2^k through the exponent bits;
// 0 below −87.3, +Inf above 88.7.
func Exp(x float32) float32 {
	switch {
	case x != x:
		return x
	case x < expLow:
		return 0
	case x > 88.7:
		return float32(math.Inf(1))
	}
	k := (x*log2e + expRound) - expRound
	r := x - k*ln2Hi - k*ln2Lo
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
	normalize(y, xhat, x, gamma, beta, float32(mu), inv)
	return inv
}

// normalize writes x̂ = (x − m)·inv (into xhat unless nil) and y = x̂·γ + β.
func normalize(y, xhat, x, gamma, beta []float32, m, inv float32) {
	y, gamma, beta = y[:len(x)], gamma[:len(x)], beta[:len(x)]
	for j, v := range x {
		h := (v - m) * inv
		if xhat != nil {
			xhat[j] = h
		}
		y[j] = h*gamma[j] + beta[j]
	}
}

// LayerNormRows is LayerNorm on each row of c values of x (into y, xhat
// unless nil, inv[r] unless inv is nil), four rows at a time: their
// float64 sums run side by side, each in its own row's order, so the
// four dependency chains overlap — the same bits as one row at a time.
func LayerNormRows(y, xhat, x, gamma, beta []float32, c int, eps float64, inv []float32) {
	rows := len(x) / c
	r := 0
	for ; r+4 <= rows; r += 4 {
		x0, x1, x2, x3 := x[r*c:(r+1)*c], x[(r+1)*c:(r+2)*c], x[(r+2)*c:(r+3)*c], x[(r+3)*c:(r+4)*c]
		var s0, s1, s2, s3 float64
		for j := range x0 {
			s0 += float64(x0[j])
			s1 += float64(x1[j])
			s2 += float64(x2[j])
			s3 += float64(x3[j])
		}
		n := float64(c)
		m0, m1, m2, m3 := s0/n, s1/n, s2/n, s3/n
		var q0, q1, q2, q3 float64
		for j := range x0 {
			e0, e1, e2, e3 := float64(x0[j])-m0, float64(x1[j])-m1, float64(x2[j])-m2, float64(x3[j])-m3
			q0 += e0 * e0
			q1 += e1 * e1
			q2 += e2 * e2
			q3 += e3 * e3
		}
		for i, sq := range [4]float64{q0, q1, q2, q3} {
			row := r + i
			v := float32(1 / math.Sqrt(sq/n+eps))
			if inv != nil {
				inv[row] = v
			}
			var xh []float32
			if xhat != nil {
				xh = xhat[row*c : (row+1)*c]
			}
			normalize(y[row*c:(row+1)*c], xh, x[row*c:(row+1)*c], gamma, beta, float32([4]float64{m0, m1, m2, m3}[i]), v)
		}
	}
	for ; r < rows; r++ {
		var xh []float32
		if xhat != nil {
			xh = xhat[r*c : (r+1)*c]
		}
		v := LayerNorm(y[r*c:(r+1)*c], xh, x[r*c:(r+1)*c], gamma, beta, eps)
		if inv != nil {
			inv[r] = v
		}
	}
}

// LayerNormFast is LayerNormRows without x̂ and 1/σ, for inference: where
// the AVX-512 kernels run and c is a multiple of 16, each row's float64
// sums run in sixteen lanes, added together at the end — not training's
// order, so a row's mean can differ from LayerNormRows' in its last bit —
// and the normalization runs 16 values at a time, rounded as
// LayerNormRows' is. Elsewhere it is LayerNormRows.
func LayerNormFast(y, x, gamma, beta []float32, c int, eps float64) {
	if !hasDirect || c%16 != 0 || len(x) == 0 {
		LayerNormRows(y, nil, x, gamma, beta, c, eps, nil)
		return
	}
	y, gamma, beta = y[:len(x)], gamma[:c], beta[:c]
	for r := 0; r+c <= len(x); r += c {
		mu := sumLanes(&x[r], c) / float64(c)
		ss := squaresLanes(&x[r], c, mu)
		inv := float32(1 / math.Sqrt(ss/float64(c)+eps))
		normalizeRow(&y[r], &x[r], &gamma[0], &beta[0], c, float32(mu), inv)
	}
}

// SoftmaxFast is SoftmaxRow for inference: where the AVX-512 kernels run,
// the maximum, the float64 sum (sixteen lanes, not SoftmaxRow's order)
// and the scaling run 16 entries at a time, the exponentials as
// SoftmaxRow's; elsewhere, and for rows of fewer than 16 live entries, it
// is SoftmaxRow.
func SoftmaxFast(s []float32, live int) {
	if !hasDirect || live < 16 {
		SoftmaxRow(s, live)
		return
	}
	clear(s[live:])
	s = s[:live]
	done := live &^ 15
	m := maxLanes(&s[0], done)
	for _, v := range s[done:] {
		m = max(m, v)
	}
	expShift(&s[0], done, m, &geluK)
	for j := done; j < live; j++ {
		s[j] = Exp(s[j] - m)
	}
	z := sumLanes(&s[0], done)
	for _, e := range s[done:] {
		z += float64(e)
	}
	inv := float32(1 / z)
	scaleLanes(&s[0], done, inv)
	for j := done; j < live; j++ {
		s[j] *= inv
	}
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
	done := 0
	if hasDirect && len(s) >= 16 { // the same bits as Exp(v − m)
		done = len(s) &^ 15
		expShift(&s[0], done, m, &geluK)
	}
	for j := done; j < len(s); j++ {
		s[j] = Exp(s[j] - m)
	}
	var z float64
	for _, e := range s {
		z += float64(e)
	}
	inv := float32(1 / z)
	for j := range s {
		s[j] *= inv
	}
}
