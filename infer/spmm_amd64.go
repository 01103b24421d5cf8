package infer

import "golang.org/x/sys/cpu"

// hasFMA says whether the AVX2/FMA sparse kernel can run here, hasVNNI
// whether the AVX-512 VNNI int8 kernel can, hasAVX2 whether its AVX2 form
// can (the Go loop runs elsewhere).
var (
	hasFMA  = cpu.X86.HasAVX2 && cpu.X86.HasFMA
	hasVNNI = cpu.X86.HasAVX512F && cpu.X86.HasAVX512VNNI
	hasAVX2 = cpu.X86.HasAVX2 // the int8 kernel without VNNI
	// hasAVX512 says whether the N:M kernel's permutations can run.
	hasAVX512 = cpu.X86.HasAVX512F
)

//go:noescape
func spmmRowFMA(vals *float32, cols *int32, nnz int, xT *float32, ldx int, y *float32, n int)

//go:noescape
func transpose8(src *float32, lds int, dst *float32, ldd int)

//go:noescape
func dotVNNI(x *uint8, w *int8, k4 int, blocks int, out *int32)

//go:noescape
func dotVNNI4(x *uint8, ldx int, w *int8, k4 int, blocks int, out *int32)

//go:noescape
func quantizeU8(x *float32, n int, inv, lo, hi float32, z, cmin, cmax int32, out *uint8, sums *[16]int32)

//go:noescape
func dotAVX2(x *int16, w *int16, k2 int, blocks int, out *int32)

//go:noescape
func nmRows(x *float32, vals *float32, idx *uint8, chunks int, rows int, y *float32)

// gemv4 computes four rows of a matrix-vector product: y[r] = w[r·ldw :
// r·ldw+n] · x[:n] for r = 0…3, n a positive multiple of 16 (AVX-512F).
//
//go:noescape
func gemv4(w *float32, ldw int, x *float32, n int, y *float32)

// convTileU8 is one tile of the integer direct convolution (direct8):
// 16 pixels × 16 channels summed with VNNI, scaled, biased, activated and
// stored under a lane mask.
//
//go:noescape
func convTileU8(x *uint8, pixStride, rowStride, k, t4 int, w *int8, out *float32, outStride int, corr *int32, scale, bias *float32, act, n, mask int)
