//go:build !amd64

package infer

var (
	hasFMA    = false
	hasVNNI   = false
	hasAVX2   = false
	hasAVX512 = false
)

func spmmRowFMA(vals *float32, cols *int32, nnz int, xT *float32, ldx int, y *float32, n int) {
	panic("infer: no SIMD sparse kernel on this architecture")
}

func transpose8(src *float32, lds int, dst *float32, ldd int) {
	panic("infer: no SIMD transpose on this architecture")
}

func dotVNNI(x *uint8, w *int8, k4 int, blocks int, out *int32) {
	panic("infer: no VNNI kernel on this architecture")
}

func dotVNNI4(x *uint8, ldx int, w *int8, k4 int, blocks int, out *int32) {
	panic("infer: no VNNI kernel on this architecture")
}

func quantizeU8(x *float32, n int, inv, lo, hi float32, z, cmin, cmax int32, out *uint8, sums *[16]int32) {
	panic("infer: no SIMD quantization on this architecture")
}

func dotAVX2(x *int16, w *int16, k2 int, blocks int, out *int32) {
	panic("infer: no AVX2 kernel on this architecture")
}

func nmRows(x *float32, vals *float32, idx *uint8, chunks int, rows int, y *float32) {
	panic("infer: no AVX-512 N:M kernel on this architecture")
}

func gemv4(w *float32, ldw int, x *float32, n int, y *float32) {
	panic("infer: no SIMD matrix-vector kernel on this architecture")
}

func convTileU8(x *uint8, pixStride, rowStride, k, t4 int, w *int8, out *float32, outStride int, corr *int32, scale, bias *float32, act, n, mask int) {
	panic("infer: no VNNI here")
}
