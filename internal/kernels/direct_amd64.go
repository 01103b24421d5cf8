package kernels

import "golang.org/x/sys/cpu"

// hasDirect says whether the AVX-512 direct convolution kernel runs here.
var hasDirect = cpu.X86.HasAVX512F

// convTile computes one tile: pixels (8 or 7) output pixels (pixStride
// bytes apart in the padded input, rows rowStride bytes apart) × 32
// channels, the bias
// plus the sums over k×k taps of c channels with filters w [k][k][c][32],
// then act (1: ReLU, 2: ReLU6); pixel p's 32 outputs go to out +
// p·outStride bytes.
//
//go:noescape
func convTile(x *float32, pixStride, rowStride, c, k int, w *float32, out *float32, outStride int, bias *float32, act, pixels int)

// convTile16 is convTile for 16 or 14 pixels × 16 channels: filters
// [k][k][c][16], bias [16].
//
//go:noescape
func convTile16(x *float32, pixStride, rowStride, c, k int, w *float32, out *float32, outStride int, bias *float32, act, pixels int)

// gradwTile adds to 16 rows of acc (acc + f·accStride bytes, 16 channels
// each) the outer products of dz's 16 filters and x's 16 channels over ny
// × nx positions (dz and x advanced by their strides in bytes).
//
//go:noescape
func gradwTile(dz *float32, dzX, dzY int, x *float32, xX, xY, ny, nx int, acc *float32, accStride int)

// addAct sets dst = act(a + b) for n a multiple of 16 (act: 1 ReLU, 2
// ReLU6).
//
//go:noescape
func addAct(dst, a, b *float32, n, act int)

// fakeQuant applies q to x for n a multiple of 16.
//
//go:noescape
func fakeQuant(x *float32, n int, q *FakeQuant)

// geluPass applies GELU (or, with dy, its gradient) for n a multiple of 16
// (GELUPass).
//
//go:noescape
func geluPass(y, x, dy *float32, n int, k *[20]float32)

// expShift sets x = Exp(x − m) for n a multiple of 16, x − m ≤ 0.
//
//go:noescape
func expShift(x *float32, n int, m float32, k *[20]float32)

// squaresLanes returns the sum of the squared distances of n floats at x
// (a multiple of 16) from mu, in float64, in sixteen lanes.
//
//go:noescape
func squaresLanes(x *float32, n int, mu float64) float64

// normalizeRow writes y = (x − m)·inv·γ + β for n floats (a multiple of 16).
//
//go:noescape
func normalizeRow(y, x, gamma, beta *float32, n int, m, inv float32)

// maxLanes returns the largest of n floats at x (n a positive multiple of 16).
//
//go:noescape
func maxLanes(x *float32, n int) float32

// sumLanes returns the sum of n floats at x (a multiple of 16) in float64,
// in sixteen lanes.
//
//go:noescape
func sumLanes(x *float32, n int) float64

// scaleLanes multiplies n floats at x (a multiple of 16) by a.
//
//go:noescape
func scaleLanes(x *float32, n int, a float32)
