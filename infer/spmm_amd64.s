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

// func transpose8(src *float32, lds int, dst *float32, ldd int)
//
// dst[j·ldd + i] = src[i·lds + j] for an 8×8 block (AVX).
TEXT ·transpose8(SB), NOSPLIT, $0-32
	MOVQ src+0(FP), SI
	MOVQ lds+8(FP), AX
	SHLQ $2, AX
	MOVQ dst+16(FP), DI
	MOVQ ldd+24(FP), BX
	SHLQ $2, BX

	VMOVUPS (SI), Y0
	ADDQ AX, SI
	VMOVUPS (SI), Y1
	ADDQ AX, SI
	VMOVUPS (SI), Y2
	ADDQ AX, SI
	VMOVUPS (SI), Y3
	ADDQ AX, SI
	VMOVUPS (SI), Y4
	ADDQ AX, SI
	VMOVUPS (SI), Y5
	ADDQ AX, SI
	VMOVUPS (SI), Y6
	ADDQ AX, SI
	VMOVUPS (SI), Y7

	VUNPCKLPS Y1, Y0, Y8
	VUNPCKHPS Y1, Y0, Y9
	VUNPCKLPS Y3, Y2, Y10
	VUNPCKHPS Y3, Y2, Y11
	VUNPCKLPS Y5, Y4, Y12
	VUNPCKHPS Y5, Y4, Y13
	VUNPCKLPS Y7, Y6, Y14
	VUNPCKHPS Y7, Y6, Y15

	VSHUFPS $0x44, Y10, Y8, Y0
	VSHUFPS $0xEE, Y10, Y8, Y1
	VSHUFPS $0x44, Y11, Y9, Y2
	VSHUFPS $0xEE, Y11, Y9, Y3
	VSHUFPS $0x44, Y14, Y12, Y4
	VSHUFPS $0xEE, Y14, Y12, Y5
	VSHUFPS $0x44, Y15, Y13, Y6
	VSHUFPS $0xEE, Y15, Y13, Y7

	VPERM2F128 $0x20, Y4, Y0, Y8
	VPERM2F128 $0x20, Y5, Y1, Y9
	VPERM2F128 $0x20, Y6, Y2, Y10
	VPERM2F128 $0x20, Y7, Y3, Y11
	VPERM2F128 $0x31, Y4, Y0, Y12
	VPERM2F128 $0x31, Y5, Y1, Y13
	VPERM2F128 $0x31, Y6, Y2, Y14
	VPERM2F128 $0x31, Y7, Y3, Y15

	VMOVUPS Y8, (DI)
	ADDQ BX, DI
	VMOVUPS Y9, (DI)
	ADDQ BX, DI
	VMOVUPS Y10, (DI)
	ADDQ BX, DI
	VMOVUPS Y11, (DI)
	ADDQ BX, DI
	VMOVUPS Y12, (DI)
	ADDQ BX, DI
	VMOVUPS Y13, (DI)
	ADDQ BX, DI
	VMOVUPS Y14, (DI)
	ADDQ BX, DI
	VMOVUPS Y15, (DI)
	VZEROUPPER
	RET

// func dotVNNI(x *uint8, w *int8, k4 int, blocks int, out *int32)
//
// out[16·b + i] = Σ_k x[k] · w[b][k/4][i][k%4] for row blocks b < blocks,
// i < 16, k < 4·k4 (k4 a multiple of 4): unsigned bytes times signed
// bytes summed exactly in int32 (AVX-512 VNNI, no 16-bit saturation).
TEXT ·dotVNNI(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), SI
	MOVQ w+8(FP), DI
	MOVQ k4+16(FP), CX
	MOVQ blocks+24(FP), R9
	MOVQ out+32(FP), DX

rowblock:
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	MOVQ SI, AX
	MOVQ CX, R8

kloop:
	VPBROADCASTD (AX), Z4
	VPBROADCASTD 4(AX), Z5
	VPBROADCASTD 8(AX), Z6
	VPBROADCASTD 12(AX), Z7
	VPDPBUSD (DI), Z4, Z0
	VPDPBUSD 64(DI), Z5, Z1
	VPDPBUSD 128(DI), Z6, Z2
	VPDPBUSD 192(DI), Z7, Z3
	ADDQ $16, AX
	ADDQ $256, DI
	SUBQ $4, R8
	JGT kloop

	VPADDD Z1, Z0, Z0
	VPADDD Z3, Z2, Z2
	VPADDD Z2, Z0, Z0
	VMOVDQU32 Z0, (DX)
	ADDQ $64, DX
	DECQ R9
	JGT rowblock
	VZEROUPPER
	RET

// func dotVNNI4(x *uint8, ldx int, w *int8, k4 int, blocks int, out *int32)
//
// dotVNNI for four samples at once (rows of x ldx bytes apart; out holds
// four rows of 16·blocks sums): each weight block is loaded once for the
// four.
TEXT ·dotVNNI4(SB), NOSPLIT, $0-48
	MOVQ x+0(FP), SI
	MOVQ ldx+8(FP), BX
	MOVQ w+16(FP), DI
	MOVQ k4+24(FP), CX
	MOVQ blocks+32(FP), R9
	MOVQ out+40(FP), DX
	MOVQ R9, R13
	SHLQ $6, R13 // one output row: 16·blocks int32

rowblock4:
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	MOVQ SI, AX
	LEAQ (SI)(BX*1), R10
	LEAQ (R10)(BX*1), R11
	LEAQ (R11)(BX*1), R12
	MOVQ CX, R8

kloop4:
	VMOVDQU32 (DI), Z8
	VPBROADCASTD (AX), Z4
	VPBROADCASTD (R10), Z5
	VPBROADCASTD (R11), Z6
	VPBROADCASTD (R12), Z7
	VPDPBUSD Z8, Z4, Z0
	VPDPBUSD Z8, Z5, Z1
	VPDPBUSD Z8, Z6, Z2
	VPDPBUSD Z8, Z7, Z3
	ADDQ $4, AX
	ADDQ $4, R10
	ADDQ $4, R11
	ADDQ $4, R12
	ADDQ $64, DI
	DECQ R8
	JGT kloop4

	MOVQ DX, AX
	VMOVDQU32 Z0, (AX)
	ADDQ R13, AX
	VMOVDQU32 Z1, (AX)
	ADDQ R13, AX
	VMOVDQU32 Z2, (AX)
	ADDQ R13, AX
	VMOVDQU32 Z3, (AX)
	ADDQ $64, DX
	DECQ R9
	JGT rowblock4
	VZEROUPPER
	RET

// func quantizeU8(x *float32, n int, inv, lo, hi float32, z, cmin, cmax int32, out *uint8, sums *[16]int32)
//
// out[i] = clamp(roundeven(clamp(x[i]·inv, lo, hi)) + z, cmin, cmax) for
// n a multiple of 16, as bytes; sums gets the codes' sums by lane
// (AVX-512; the conversion rounds to nearest even, MXCSR's default).
TEXT ·quantizeU8(SB), NOSPLIT, $0-56
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS inv+16(FP), Z2
	VBROADCASTSS lo+20(FP), Z3
	VBROADCASTSS hi+24(FP), Z4
	MOVL z+28(FP), AX
	VPBROADCASTD AX, Z5
	MOVL cmin+32(FP), AX
	VPBROADCASTD AX, Z6
	MOVL cmax+36(FP), AX
	VPBROADCASTD AX, Z7
	MOVQ out+40(FP), DI
	MOVQ sums+48(FP), DX
	VPXORD Z8, Z8, Z8

qloop:
	VMULPS (SI), Z2, Z0
	VMAXPS Z3, Z0, Z0
	VMINPS Z4, Z0, Z0
	VCVTPS2DQ Z0, Z1
	VPADDD Z5, Z1, Z1
	VPMAXSD Z6, Z1, Z1
	VPMINSD Z7, Z1, Z1
	VPADDD Z1, Z8, Z8
	VPMOVDB Z1, (DI)
	ADDQ $64, SI
	ADDQ $16, DI
	SUBQ $16, CX
	JGT qloop

	VMOVDQU32 Z8, (DX)
	VZEROUPPER
	RET

// func dotAVX2(x *int16, w *int16, k2 int, blocks int, out *int32)
//
// out[8·b + i] = Σ_k x[k] · w[b][k/2][i][k%2] for row blocks b < blocks,
// i < 8, k < 2·k2 (k2 a multiple of 4): input codes and weight codes
// widened to 16 bits, multiplied in pairs and summed exactly in int32
// (VPMADDWD: no 16-bit saturation, unlike VPMADDUBSW).
TEXT ·dotAVX2(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), SI
	MOVQ w+8(FP), DI
	MOVQ k2+16(FP), CX
	MOVQ blocks+24(FP), R9
	MOVQ out+32(FP), DX

block2:
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	VPXOR Y3, Y3, Y3
	MOVQ SI, AX
	MOVQ CX, R8

kloop2:
	VPBROADCASTD (AX), Y4
	VPBROADCASTD 4(AX), Y5
	VPBROADCASTD 8(AX), Y6
	VPBROADCASTD 12(AX), Y7
	VPMADDWD (DI), Y4, Y4
	VPMADDWD 32(DI), Y5, Y5
	VPMADDWD 64(DI), Y6, Y6
	VPMADDWD 96(DI), Y7, Y7
	VPADDD Y4, Y0, Y0
	VPADDD Y5, Y1, Y1
	VPADDD Y6, Y2, Y2
	VPADDD Y7, Y3, Y3
	ADDQ $16, AX
	ADDQ $128, DI
	SUBQ $4, R8
	JGT kloop2

	VPADDD Y1, Y0, Y0
	VPADDD Y3, Y2, Y2
	VPADDD Y2, Y0, Y0
	VMOVDQU Y0, (DX)
	ADDQ $32, DX
	DECQ R9
	JGT block2
	VZEROUPPER
	RET

// func nmRows(x *float32, vals *float32, idx *uint8, chunks int, rows int, y *float32)
//
// 2:4-sparse rows against one input row: y[r] = Σ_c Σ_j vals[r][c][j] ·
// x[32c + idx[r][c][j]] for r < rows, c < chunks, j < 16 — each chunk of 32
// inputs (8 groups of 4) keeps 16 slots, picked from two registers of x
// with one VPERMT2PS (AVX-512).
TEXT ·nmRows(SB), NOSPLIT, $0-48
	MOVQ vals+8(FP), DI
	MOVQ idx+16(FP), BX
	MOVQ rows+32(FP), R9
	MOVQ y+40(FP), DX

nmrow:
	MOVQ x+0(FP), SI
	MOVQ chunks+24(FP), CX
	VPXORD Z3, Z3, Z3

nmchunk:
	VMOVUPS (SI), Z0
	VMOVUPS 64(SI), Z1
	VPMOVZXBD (BX), Z2
	VPERMT2PS Z1, Z2, Z0
	VFMADD231PS (DI), Z0, Z3
	ADDQ $128, SI
	ADDQ $64, DI
	ADDQ $16, BX
	DECQ CX
	JGT nmchunk

	VEXTRACTF64X4 $1, Z3, Y4
	VADDPS Y4, Y3, Y3
	VEXTRACTF128 $1, Y3, X4
	VADDPS X4, X3, X3
	VMOVHLPS X3, X3, X4
	VADDPS X4, X3, X3
	VMOVSHDUP X3, X4
	VADDSS X4, X3, X3
	VMOVSS X3, (DX)
	ADDQ $4, DX
	DECQ R9
	JGT nmrow
	VZEROUPPER
	RET

// func gemv4(w *float32, ldw int, x *float32, n int, y *float32)
//
// y[r] = Σ_{k<n} w[r·ldw + k] · x[k] for the four rows r = 0…3, n a
// positive multiple of 16: each x vector loaded once for the four rows,
// two accumulators per row (AVX-512F).
TEXT ·gemv4(SB), NOSPLIT, $0-40
	MOVQ w+0(FP), SI
	MOVQ ldw+8(FP), R8
	SHLQ $2, R8
	MOVQ x+16(FP), DI
	MOVQ n+24(FP), CX
	MOVQ y+32(FP), DX
	LEAQ (SI)(R8*1), R9
	LEAQ (R9)(R8*1), R10
	LEAQ (R10)(R8*1), R11
	VXORPS Z0, Z0, Z0
	VXORPS Z1, Z1, Z1
	VXORPS Z2, Z2, Z2
	VXORPS Z3, Z3, Z3
	VXORPS Z4, Z4, Z4
	VXORPS Z5, Z5, Z5
	VXORPS Z6, Z6, Z6
	VXORPS Z7, Z7, Z7
	XORQ AX, AX
	TESTQ $16, CX
	JZ pairs

	// An odd block of 16 first, so that the loop takes pairs.
	VMOVUPS (DI), Z8
	VFMADD231PS (SI), Z8, Z0
	VFMADD231PS (R9), Z8, Z2
	VFMADD231PS (R10), Z8, Z4
	VFMADD231PS (R11), Z8, Z6
	MOVQ $64, AX
	SUBQ $16, CX
	JZ done

pairs:
	VMOVUPS (DI)(AX*1), Z8
	VMOVUPS 64(DI)(AX*1), Z9
	VFMADD231PS (SI)(AX*1), Z8, Z0
	VFMADD231PS 64(SI)(AX*1), Z9, Z1
	VFMADD231PS (R9)(AX*1), Z8, Z2
	VFMADD231PS 64(R9)(AX*1), Z9, Z3
	VFMADD231PS (R10)(AX*1), Z8, Z4
	VFMADD231PS 64(R10)(AX*1), Z9, Z5
	VFMADD231PS (R11)(AX*1), Z8, Z6
	VFMADD231PS 64(R11)(AX*1), Z9, Z7
	ADDQ $128, AX
	SUBQ $32, CX
	JNZ pairs

done:
	VADDPS Z1, Z0, Z0
	VADDPS Z3, Z2, Z2
	VADDPS Z5, Z4, Z4
	VADDPS Z7, Z6, Z6
	// Horizontal sums of Z0, Z2, Z4, Z6 into y[0…3].
	VEXTRACTF64X4 $1, Z0, Y8
	VADDPS Y8, Y0, Y0
	VEXTRACTF64X4 $1, Z2, Y9
	VADDPS Y9, Y2, Y2
	VEXTRACTF64X4 $1, Z4, Y10
	VADDPS Y10, Y4, Y4
	VEXTRACTF64X4 $1, Z6, Y11
	VADDPS Y11, Y6, Y6
	VHADDPS Y2, Y0, Y0   // [r0 r0 r2 r2 | r0 r0 r2 r2] pairs
	VHADDPS Y6, Y4, Y4
	VHADDPS Y4, Y0, Y0   // [r0 r2 r4 r6 | r0 r2 r4 r6]
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VMOVUPS X0, (DX)
	VZEROUPPER
	RET
