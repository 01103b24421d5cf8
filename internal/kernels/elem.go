package kernels

// Element-wise passes over activations: a residual addition with its
// activation, and an activation's fake quantization — AVX-512 where the
// CPU has it, the same float32 operations in the same order (hence the same
// bits) in Go elsewhere and for a tail of fewer than 16.

// AddAct sets dst = act(a + b) (act: ActNone, ActReLU, ActReLU6); dst may
// be a or b. ReLU keeps a −0 sum (as v < 0 ? 0 : v does), ReLU6 makes it +0.
func AddAct(dst, a, b []float32, act int) {
	n := len(dst)
	a, b = a[:n], b[:n]
	done := 0
	if hasDirect && n >= 16 {
		done = n &^ 15
		addAct(&dst[0], &a[0], &b[0], done, act)
	}
	for i := done; i < n; i++ {
		v := a[i] + b[i]
		switch act {
		case ActReLU:
			if v < 0 {
				v = 0
			}
		case ActReLU6:
			v = min(max(v, 0), 6)
		}
		dst[i] = v
	}
}

// FakeQuant is a frozen activation quantization: each value v becomes
// (clamp(roundeven(v·Inv) + Zero, Qmin, Qmax) − Zero)·Scale — Inv is
// 1/Scale, Zero, Qmin and Qmax integers held as floats.
type FakeQuant struct {
	Scale, Inv, Zero, Qmin, Qmax float32
}

// Code is v's integer code as a float.
func (q *FakeQuant) Code(v float32) float32 {
	return min(max(RoundEven32(v*q.Inv)+q.Zero, q.Qmin), q.Qmax)
}

// Apply fake-quantizes x in place.
func (q *FakeQuant) Apply(x []float32) {
	done := 0
	if hasDirect && len(x) >= 16 {
		done = len(x) &^ 15
		fakeQuant(&x[0], done, q)
	}
	for i := done; i < len(x); i++ {
		x[i] = (q.Code(x[i]) - q.Zero) * q.Scale
	}
}
