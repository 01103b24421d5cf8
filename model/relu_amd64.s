#include "textflag.h"

// func reluGradAcc8(dst, y, dy, acc *float32, n int)
//
// For i < n (a multiple of 8): dst[i] = dy[i] where y[i]'s bits, read as a
// signed integer, are > 0 (y > 0), else +0 — reluGrad's bit mask — and
// acc[i] += dst[i], eight at a time: the same bits as the Go loops.
TEXT ·reluGradAcc8(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ y+8(FP), SI
	MOVQ dy+16(FP), DX
	MOVQ acc+24(FP), R8
	MOVQ n+32(FP), CX
	VPXOR Y7, Y7, Y7
	SHRQ $3, CX
	JZ   done

loop:
	VMOVDQU (SI), Y0
	VPCMPGTD Y7, Y0, Y0   // y > 0 as int32: all ones
	VPAND   (DX), Y0, Y0  // dy & mask
	VMOVDQU Y0, (DI)
	VADDPS  (R8), Y0, Y1  // acc + dst
	VMOVUPS Y1, (R8)
	ADDQ    $32, DI
	ADDQ    $32, SI
	ADDQ    $32, DX
	ADDQ    $32, R8
	DECQ    CX
	JNZ     loop

done:
	VZEROUPPER
	RET
