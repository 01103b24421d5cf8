//go:build !amd64

package kernels

var hasDirect = false

func convTile(x *float32, pixStride, rowStride, c, k int, w *float32, out *float32, outStride int, bias *float32, act, pixels int) {
	panic("kernels: no direct convolution kernel on this architecture")
}

func convTile16(x *float32, pixStride, rowStride, c, k int, w *float32, out *float32, outStride int, bias *float32, act, pixels int) {
	panic("kernels: no direct convolution kernel on this architecture")
}

func gradwTile(dz *float32, dzX, dzY int, x *float32, xX, xY, ny, nx int, acc *float32, accStride int) {
	panic("kernels: no AVX-512 here")
}

func addAct(dst, a, b *float32, n, act int) {
	panic("kernels: no AVX-512 here")
}

func fakeQuant(x *float32, n int, q *FakeQuant) {
	panic("kernels: no AVX-512 here")
}

func geluPass(y, x, dy *float32, n int, k *[20]float32) {
	panic("kernels: no AVX-512 here")
}

func expShift(x *float32, n int, m float32, k *[20]float32) {
	panic("kernels: no AVX-512 here")
}

func squaresLanes(x *float32, n int, mu float64) float64 {
	panic("kernels: no AVX-512 here")
}

func normalizeRow(y, x, gamma, beta *float32, n int, m, inv float32) {
	panic("kernels: no AVX-512 here")
}

func maxLanes(x *float32, n int) float32 {
	panic("kernels: no AVX-512 here")
}

func sumLanes(x *float32, n int) float64 {
	panic("kernels: no AVX-512 here")
}

func scaleLanes(x *float32, n int, a float32) {
	panic("kernels: no AVX-512 here")
}
