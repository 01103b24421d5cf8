package trainer

import "golang.org/x/sys/cpu"

// hasAVX2 says whether the AVX2 forms of the momentum updates run here
// (the Go loops elsewhere; both give the same bits).
var hasAVX2 = cpu.X86.HasAVX2

//go:noescape
func sgdMomentum8(w, v, grad *float32, n int, mu, wd, lr float32)

//go:noescape
func sgdMomentumMasked8(w, v, grad *float32, mask *byte, n int, mu, wd, lr float32)

//go:noescape
func fixed4(into *int64, vs *float32, n int, add bool) int
