#include "textflag.h"

// SGDARGS loads sgdMomentum8's and sgdNesterov8's arguments: w, w0, v, v0
// and grad into DI, R9, SI, R10 and DX, n/8 into CX (flags set), mu, wd
// and lr broadcast into Y8, Y9 and Y10, and zeroes the offset AX.
#define SGDARGS \
	MOVQ w+0(FP), DI; \
	MOVQ w0+8(FP), R9; \
	MOVQ v+16(FP), SI; \
	MOVQ v0+24(FP), R10; \
	MOVQ grad+32(FP), DX; \
	MOVQ n+40(FP), CX; \
	VBROADCASTSS mu+48(FP), Y8; \
	VBROADCASTSS wd+52(FP), Y9; \
	VBROADCASTSS lr+56(FP), Y10; \
	XORQ AX, AX; \
	SHRQ $3, CX

// func sgdMomentum8(w, w0, v, v0, grad *float32, n int, mu, wd, lr float32)
//
// For i < n (a multiple of 8): v = (mu·v0 + g) + wd·w0; w = w0 − lr·v —
// the Go loop's operations in its order, each one IEEE single rounding
// (no fused multiply-add), eight at a time: the same bits. w0 and v0 are
// the sources (w and v themselves, or the committed state a chunk's
// owner updates from without copying it first).
TEXT ·sgdMomentum8(SB), NOSPLIT, $0-60
	SGDARGS
	JZ   done

loop:
	VMOVUPS (R9)(AX*1), Y0  // w0
	VMOVUPS (R10)(AX*1), Y1 // v0
	VMULPS  Y8, Y1, Y1      // mu·v0
	VADDPS  (DX)(AX*1), Y1, Y1 // + g
	VMULPS  Y9, Y0, Y2      // wd·w0
	VADDPS  Y2, Y1, Y1      // v'
	VMOVUPS Y1, (SI)(AX*1)
	VMULPS  Y10, Y1, Y1     // lr·v'
	VSUBPS  Y1, Y0, Y0      // w0 − lr·v'
	VMOVUPS Y0, (DI)(AX*1)
	ADDQ    $32, AX
	DECQ    CX
	JNZ     loop

done:
	VZEROUPPER
	RET

// func sgdMomentumMasked8(w, w0, v, v0, grad *float32, mask *byte, n int, mu, wd, lr float32)
//
// sgdMomentum8 with a mask byte per element: keep = −uint32(mask) as a bit
// pattern, and v and w are ANDed with it after the update, as the Go loop
// does.
TEXT ·sgdMomentumMasked8(SB), NOSPLIT, $0-68
	MOVQ w+0(FP), DI
	MOVQ w0+8(FP), R9
	MOVQ v+16(FP), SI
	MOVQ v0+24(FP), R10
	MOVQ grad+32(FP), DX
	MOVQ mask+40(FP), R8
	MOVQ n+48(FP), CX
	VBROADCASTSS mu+56(FP), Y8
	VBROADCASTSS wd+60(FP), Y9
	VBROADCASTSS lr+64(FP), Y10
	VPXOR Y11, Y11, Y11
	XORQ AX, AX
	SHRQ $3, CX
	JZ   mdone

mloop:
	VPMOVZXBD (R8), Y3      // the eight mask bytes as dwords
	VPSUBD  Y3, Y11, Y3     // keep = 0 − mask
	VMOVUPS (R9)(AX*1), Y0  // w0
	VMOVUPS (R10)(AX*1), Y1 // v0
	VMULPS  Y8, Y1, Y1      // mu·v0
	VADDPS  (DX)(AX*1), Y1, Y1 // + g
	VMULPS  Y9, Y0, Y2      // wd·w0
	VADDPS  Y2, Y1, Y1      // v'
	VANDPS  Y3, Y1, Y4
	VMOVUPS Y4, (SI)(AX*1)  // v' & keep
	VMULPS  Y10, Y1, Y1     // lr·v'
	VSUBPS  Y1, Y0, Y0      // w0 − lr·v'
	VANDPS  Y3, Y0, Y0
	VMOVUPS Y0, (DI)(AX*1)  // & keep
	ADDQ    $32, AX
	ADDQ    $8, R8
	DECQ    CX
	JNZ     mloop

mdone:
	VZEROUPPER
	RET

// func sgdNesterov8(w, w0, v, v0, grad *float32, n int, mu, wd, lr float32)
//
// For i < n (a multiple of 8): d = g + wd·w0; v = mu·v0 + d;
// w = w0 − lr·(d + mu·v) — the Go loop's operations in its order, each one
// IEEE single rounding (no fused multiply-add), eight at a time.
TEXT ·sgdNesterov8(SB), NOSPLIT, $0-60
	SGDARGS
	JZ   ndone

nloop:
	VMOVUPS (R9)(AX*1), Y0  // w0
	VMULPS  Y9, Y0, Y3      // wd·w0
	VADDPS  (DX)(AX*1), Y3, Y3 // d = g + wd·w0
	VMOVUPS (R10)(AX*1), Y1 // v0
	VMULPS  Y8, Y1, Y1      // mu·v0
	VADDPS  Y3, Y1, Y1      // v' = mu·v0 + d
	VMOVUPS Y1, (SI)(AX*1)
	VMULPS  Y8, Y1, Y4      // mu·v'
	VADDPS  Y4, Y3, Y4      // d + mu·v'
	VMULPS  Y10, Y4, Y4     // lr·(d + mu·v')
	VSUBPS  Y4, Y0, Y0      // w0 − lr·(d + mu·v')
	VMOVUPS Y0, (DI)(AX*1)
	ADDQ    $32, AX
	DECQ    CX
	JNZ     nloop

ndone:
	VZEROUPPER
	RET

// func scale8(dst, src *float32, n int, m float32, div bool)
//
// For i < n (a multiple of 8): dst = src·m, or src/m with div — one IEEE
// single rounding each, as the Go loops: the same bits.
TEXT ·scale8(SB), NOSPLIT, $0-29
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS m+24(FP), Y1
	MOVBLZX div+28(FP), DX
	SHRQ $3, CX
	JZ   sdone
	TESTQ DX, DX
	JNZ  sdiv

smul:
	VMULPS  (SI), Y1, Y0
	VMOVUPS Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     smul
	JMP     sdone

sdiv:
	VMOVUPS (SI), Y0
	VDIVPS  Y1, Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     sdiv

sdone:
	VZEROUPPER
	RET
