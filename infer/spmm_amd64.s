#include "textflag.h"

// func spmmRowFMA(vals *float32, cols *int32, nnz int, xT *float32, ldx int, y *float32, n int)
//
// y[0:n] = Σ_k vals[k] · xT[cols[k]·ldx : cols[k]·ldx+n] for n a positive
// multiple of 32: one sparse weight row against activations laid out
// feature-major, 32 samples per pass in four YMM accumulators (AVX2, FMA).
TEXT ·spmmRowFMA(SB), NOSPLIT, $0-56
	MOVQ vals+0(FP), SI
	MOVQ cols+8(FP), DI
	MOVQ nnz+16(FP), CX
	MOVQ xT+24(FP), BX
	MOVQ ldx+32(FP), R8
	SHLQ $2, R8
	MOVQ y+40(FP), DX
	MOVQ n+48(FP), R9
	XORQ R10, R10

block:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	XORQ R11, R11
	TESTQ CX, CX
	JZ store

inner:
	MOVLQSX (DI)(R11*4), AX
	IMULQ R8, AX
	ADDQ BX, AX
	ADDQ R10, AX
	VBROADCASTSS (SI)(R11*4), Y4
	VFMADD231PS (AX), Y4, Y0
	VFMADD231PS 32(AX), Y4, Y1
	VFMADD231PS 64(AX), Y4, Y2
	VFMADD231PS 96(AX), Y4, Y3
	INCQ R11
	CMPQ R11, CX
	JLT inner

store:
	VMOVUPS Y0, (DX)(R10*1)
	VMOVUPS Y1, 32(DX)(R10*1)
	VMOVUPS Y2, 64(DX)(R10*1)
	VMOVUPS Y3, 96(DX)(R10*1)
	ADDQ $128, R10
	SUBQ $32, R9
	JGT block
	VZEROUPPER
	RET
