package trainer

import "golang.org/x/sys/cpu"

// hasAVX2 says whether the AVX2 forms of the momentum updates run here
// (the Go loops elsewhere; both give the same bits).
var hasAVX2 = cpu.X86.HasAVX2

// hasAVX512DQ says whether the AVX-512 forms of the fixed-point conversions
// (FromFixedAdd's, AddFixed's) run here.
var hasAVX512DQ = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ

//go:noescape
func fromFixed8(dst *float32, q, add *int64, n int)

//go:noescape
func sgdMomentum8(w, w0, v, v0, grad *float32, n int, mu, wd, lr float32)

//go:noescape
func sgdNesterov8(w, w0, v, v0, grad *float32, n int, mu, wd, lr float32)

//go:noescape
func sgdMomentumMasked8(w, w0, v, v0, grad *float32, mask *byte, n int, mu, wd, lr float32)

//go:noescape
func fixed4(into *int64, vs *float32, n int, add bool) int

//go:noescape
func fixedSum16(into *int64, vs **float32, m, from, n int, add bool) int

//go:noescape
func fixedSum8(into *int64, vs **float32, m, from, n int, add bool) int

//go:noescape
func fromFixed4(dst *float32, q, add *int64, n int) int

//go:noescape
func fixable8(vs *float32, n int) int

//go:noescape
func scale8(dst, src *float32, n int, m float32, div bool)

// fixedChain64 and fixedChain1 sum runs' products in fixed point over a
// panel of 64 or 16 columns (fixedchain.go, fixed_amd64.s).
//
//go:noescape
func fixedChain64(into *int64, segs *fixedSeg, sh *fixedChainShape) bool

//go:noescape
func fixedChain1(into *int64, segs *fixedSeg, sh *fixedChainShape) bool
