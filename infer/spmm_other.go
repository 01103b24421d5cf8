//go:build !amd64

package infer

const hasFMA = false

func spmmRowFMA(vals *float32, cols *int32, nnz int, xT *float32, ldx int, y *float32, n int) {
	panic("infer: no SIMD sparse kernel on this architecture")
}
