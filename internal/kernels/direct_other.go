//go:build !amd64

package kernels

var hasDirect = false

func convTile(x *float32, pixStride, rowStride, c, k int, w *float32, out *float32, outStride int, bias *float32, act int) {
	panic("kernels: no direct convolution kernel on this architecture")
}

func convTile16(x *float32, pixStride, rowStride, c, k int, w *float32, out *float32, outStride int, bias *float32, act int) {
	panic("kernels: no direct convolution kernel on this architecture")
}
