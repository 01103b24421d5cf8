#include "textflag.h"

// func sgdMomentum8(w, v, grad *float32, n int, mu, wd, lr float32)
//
// For i < n (a multiple of 8): v = (mu·v + g) + wd·w; w = w − lr·v — the
// Go loop's operations in its order, each one IEEE single rounding (no
// fused multiply-add), eight at a time: the same bits.
TEXT ·sgdMomentum8(SB), NOSPLIT, $0-44
	MOVQ w+0(FP), DI
	MOVQ v+8(FP), SI
	MOVQ grad+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS mu+32(FP), Y8
	VBROADCASTSS wd+36(FP), Y9
	VBROADCASTSS lr+40(FP), Y10
	SHRQ $3, CX
	JZ   done

loop:
	VMOVUPS (DI), Y0        // w
	VMOVUPS (SI), Y1        // v
	VMULPS  Y8, Y1, Y1      // mu·v
	VADDPS  (DX), Y1, Y1    // + g
	VMULPS  Y9, Y0, Y2      // wd·w
	VADDPS  Y2, Y1, Y1      // v'
	VMOVUPS Y1, (SI)
	VMULPS  Y10, Y1, Y1     // lr·v'
	VSUBPS  Y1, Y0, Y0      // w − lr·v'
	VMOVUPS Y0, (DI)
	ADDQ    $32, DI
	ADDQ    $32, SI
	ADDQ    $32, DX
	DECQ    CX
	JNZ     loop

done:
	VZEROUPPER
	RET

// func sgdMomentumMasked8(w, v, grad *float32, mask *byte, n int, mu, wd, lr float32)
//
// sgdMomentum8 with a mask byte per element: keep = −uint32(mask) as a bit
// pattern, and v and w are ANDed with it after the update, as the Go loop
// does.
TEXT ·sgdMomentumMasked8(SB), NOSPLIT, $0-52
	MOVQ w+0(FP), DI
	MOVQ v+8(FP), SI
	MOVQ grad+16(FP), DX
	MOVQ mask+24(FP), R8
	MOVQ n+32(FP), CX
	VBROADCASTSS mu+40(FP), Y8
	VBROADCASTSS wd+44(FP), Y9
	VBROADCASTSS lr+48(FP), Y10
	VPXOR Y11, Y11, Y11
	SHRQ $3, CX
	JZ   mdone

mloop:
	VPMOVZXBD (R8), Y3      // the eight mask bytes as dwords
	VPSUBD  Y3, Y11, Y3     // keep = 0 − mask
	VMOVUPS (DI), Y0        // w
	VMOVUPS (SI), Y1        // v
	VMULPS  Y8, Y1, Y1      // mu·v
	VADDPS  (DX), Y1, Y1    // + g
	VMULPS  Y9, Y0, Y2      // wd·w
	VADDPS  Y2, Y1, Y1      // v'
	VANDPS  Y3, Y1, Y4
	VMOVUPS Y4, (SI)        // v' & keep
	VMULPS  Y10, Y1, Y1     // lr·v'
	VSUBPS  Y1, Y0, Y0      // w − lr·v'
	VANDPS  Y3, Y0, Y0
	VMOVUPS Y0, (DI)        // & keep
	ADDQ    $32, DI
	ADDQ    $32, SI
	ADDQ    $32, DX
	ADDQ    $8, R8
	DECQ    CX
	JNZ     mloop

mdone:
	VZEROUPPER
	RET

// func sgdNesterov8(w, v, grad *float32, n int, mu, wd, lr float32)
//
// For i < n (a multiple of 8): d = g + wd·w; v = mu·v + d;
// w = w − lr·(d + mu·v) — the Go loop's operations in its order, each one
// IEEE single rounding (no fused multiply-add), eight at a time.
TEXT ·sgdNesterov8(SB), NOSPLIT, $0-44
	MOVQ w+0(FP), DI
	MOVQ v+8(FP), SI
	MOVQ grad+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS mu+32(FP), Y8
	VBROADCASTSS wd+36(FP), Y9
	VBROADCASTSS lr+40(FP), Y10
	SHRQ $3, CX
	JZ   ndone

nloop:
	VMOVUPS (DI), Y0        // w
	VMULPS  Y9, Y0, Y3      // wd·w
	VADDPS  (DX), Y3, Y3    // d = g + wd·w
	VMOVUPS (SI), Y1        // v
	VMULPS  Y8, Y1, Y1      // mu·v
	VADDPS  Y3, Y1, Y1      // v' = mu·v + d
	VMOVUPS Y1, (SI)
	VMULPS  Y8, Y1, Y4      // mu·v'
	VADDPS  Y4, Y3, Y4      // d + mu·v'
	VMULPS  Y10, Y4, Y4     // lr·(d + mu·v')
	VSUBPS  Y4, Y0, Y0      // w − lr·(d + mu·v')
	VMOVUPS Y0, (DI)
	ADDQ    $32, DI
	ADDQ    $32, SI
	ADDQ    $32, DX
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
