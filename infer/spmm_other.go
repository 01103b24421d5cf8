//go:build !amd64

package infer

const hasFMA = false

func spmmRowFMA(vals *float32, cols *int32, nnz int, xT *float32, ldx int, y *float32, n int) {
	panic("infer: no SIMD sparse kernel on this architecture")
}

func transpose8(src *float32, lds int, dst *float32, ldd int) {
	panic("infer: no SIMD transpose on this architecture")
}
