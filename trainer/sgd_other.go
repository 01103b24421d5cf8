//go:build !amd64

package trainer

const hasAVX2, hasAVX512DQ = false, false

func fromFixed8(dst *float32, q, add *int64, n int) { panic("trainer: no AVX-512 here") }

func sgdMomentum8(w, w0, v, v0, grad *float32, n int, mu, wd, lr float32) {
	panic("trainer: no AVX2 here")
}

func sgdNesterov8(w, w0, v, v0, grad *float32, n int, mu, wd, lr float32) {
	panic("trainer: no AVX2 here")
}

func sgdMomentumMasked8(w, w0, v, v0, grad *float32, mask *byte, n int, mu, wd, lr float32) {
	panic("trainer: no AVX2 here")
}

func fixed4(into *int64, vs *float32, n int, add bool) int { panic("trainer: no AVX2 here") }

func fixedSum16(into *int64, vs **float32, m, from, n int, add bool) int {
	panic("trainer: no AVX-512 here")
}

func fixedSum8(into *int64, vs **float32, m, from, n int, add bool) int {
	panic("trainer: no AVX2 here")
}

func fromFixed4(dst *float32, q, add *int64, n int) int { panic("trainer: no AVX2 here") }

func fixable8(vs *float32, n int) int { panic("trainer: no AVX2 here") }

func scale8(dst, src *float32, n int, m float32, div bool) { panic("trainer: no AVX2 here") }

func fixedChain64(into *int64, segs *fixedSeg, sh *fixedChainShape) bool {
	panic("trainer: no AVX-512 here")
}

func fixedChain1(into *int64, segs *fixedSeg, sh *fixedChainShape) bool {
	panic("trainer: no AVX-512 here")
}
