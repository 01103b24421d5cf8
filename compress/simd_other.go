//go:build !amd64

package compress

const hasAVX2 = false

func minMax8(x *float32, n int, out *[16]float32) { panic("compress: no AVX2 here") }

func fakeQuant8(dst, src *float32, n int, inv, sc, zf float32, out *[16]float32) {
	panic("compress: no AVX2 here")
}
