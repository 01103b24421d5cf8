#include "textflag.h"

// ALL16(op, r) applies op r to each of the sixteen accumulators Z0…Z15.
#define ALL16(op, r) op r, Z0, Z0; op r, Z1, Z1; op r, Z2, Z2; op r, Z3, Z3; op r, Z4, Z4; op r, Z5, Z5; op r, Z6, Z6; op r, Z7, Z7; op r, Z8, Z8; op r, Z9, Z9; op r, Z10, Z10; op r, Z11, Z11; op r, Z12, Z12; op r, Z13, Z13; op r, Z14, Z14; op r, Z15, Z15

// ACTIVATE(done) applies the kernel's act argument to the accumulators:
// 0 none, 1 ReLU, 2 ReLU6 (min(max(x, 0), 6)); then done.
#define ACTIVATE(done) MOVQ act+72(FP), AX; CMPQ AX, $0; JEQ done; VXORPS Z28, Z28, Z28; ALL16(VMAXPS, Z28); CMPQ AX, $2; JNE done; MOVL $0x40c00000, BX; VPBROADCASTD BX, Z29; ALL16(VMINPS, Z29)

// FMA7x32: pixels 0…6 of a tap (broadcast into Z18…Z24) times the 32
// filters in Z16, Z17, into Z0…Z13. FMA14x16: pixels 0…13 broadcast from
// memory times the 16 filters in Z16, into Z0…Z13. A tile of one pixel
// more adds its last pixel to these (Z14, Z15).
#define BCAST7 VBROADCASTSS (R8), Z18; VBROADCASTSS (R8)(R9*1), Z19; VBROADCASTSS (R8)(R9*2), Z20; VBROADCASTSS (R10), Z21; VBROADCASTSS (R8)(R9*4), Z22; VBROADCASTSS (R10)(R9*2), Z23; VBROADCASTSS (R11), Z24
#define FMA7x32 VFMADD231PS Z18, Z16, Z0; VFMADD231PS Z18, Z17, Z1; VFMADD231PS Z19, Z16, Z2; VFMADD231PS Z19, Z17, Z3; VFMADD231PS Z20, Z16, Z4; VFMADD231PS Z20, Z17, Z5; VFMADD231PS Z21, Z16, Z6; VFMADD231PS Z21, Z17, Z7; VFMADD231PS Z22, Z16, Z8; VFMADD231PS Z22, Z17, Z9; VFMADD231PS Z23, Z16, Z10; VFMADD231PS Z23, Z17, Z11; VFMADD231PS Z24, Z16, Z12; VFMADD231PS Z24, Z17, Z13
#define FMA14x16 VFMADD231PS.BCST (R8), Z16, Z0; VFMADD231PS.BCST (R8)(R9*1), Z16, Z1; VFMADD231PS.BCST (R8)(R9*2), Z16, Z2; VFMADD231PS.BCST (R10), Z16, Z3; VFMADD231PS.BCST (R10)(R9*1), Z16, Z4; VFMADD231PS.BCST (R10)(R9*2), Z16, Z5; VFMADD231PS.BCST (R11), Z16, Z6; VFMADD231PS.BCST (R11)(R9*1), Z16, Z7; VFMADD231PS.BCST (R11)(R9*2), Z16, Z8; VFMADD231PS.BCST (R15), Z16, Z9; VFMADD231PS.BCST (R15)(R9*1), Z16, Z10; VFMADD231PS.BCST (R15)(R9*2), Z16, Z11; VFMADD231PS.BCST (SI), Z16, Z12; VFMADD231PS.BCST (SI)(R9*1), Z16, Z13

// func convTile(x *float32, pixStride, rowStride, c, k int, w *float32, out *float32, outStride int, bias *float32, act, pixels int)
//
// out[p·outStride/4 + 0:32] = act(bias[0:32] + Σ_{ky,kx,ci} x[ky·rowStride + p·pixStride + (kx·c + ci)·4] · w[ky][kx][ci][0:32])
// for p < pixels (8 or 7; act 1: ReLU, 2: ReLU6, else none): sixteen ZMM
// accumulators (8 pixels × 2 halves of 32 channels), the taps and channels
// in order (AVX-512F).
TEXT ·convTile(SB), NOSPLIT, $0-88
	MOVQ x+0(FP), R14
	MOVQ pixStride+8(FP), R9
	MOVQ rowStride+16(FP), R12
	MOVQ c+24(FP), R13
	MOVQ k+32(FP), BX
	MOVQ w+40(FP), DI
	MOVQ out+48(FP), DX

	MOVQ bias+64(FP), SI
	VMOVUPS (SI), Z26
	VMOVUPS 64(SI), Z27
	VMOVAPS Z26, Z0
	VMOVAPS Z27, Z1
	VMOVAPS Z26, Z2
	VMOVAPS Z27, Z3
	VMOVAPS Z26, Z4
	VMOVAPS Z27, Z5
	VMOVAPS Z26, Z6
	VMOVAPS Z27, Z7
	VMOVAPS Z26, Z8
	VMOVAPS Z27, Z9
	VMOVAPS Z26, Z10
	VMOVAPS Z27, Z11
	VMOVAPS Z26, Z12
	VMOVAPS Z27, Z13
	VMOVAPS Z26, Z14
	VMOVAPS Z27, Z15

	MOVQ BX, AX         // ky countdown
	IMULQ BX, R13       // k·c: the channels of a row of taps, in floats
	MOVQ pixels+80(FP), BX

rows:
	// Pixel p of this tap row: R8 + p·R9 (R10 = R8 + 3·R9, R11 = R8 + 6·R9).
	MOVQ R14, R8
	LEAQ (R8)(R9*2), R10
	ADDQ R9, R10
	LEAQ (R10)(R9*2), R11
	ADDQ R9, R11
	MOVQ R13, CX        // every (kx, ci) of the row: contiguous in x and w
	CMPQ BX, $8
	JNE taps7

taps:
	VMOVUPS (DI), Z16
	VMOVUPS 64(DI), Z17
	BCAST7
	VBROADCASTSS (R11)(R9*1), Z25
	FMA7x32
	VFMADD231PS Z25, Z16, Z14
	VFMADD231PS Z25, Z17, Z15
	ADDQ $4, R8
	ADDQ $4, R10
	ADDQ $4, R11
	ADDQ $128, DI
	DECQ CX
	JNZ taps
	JMP rowdone

taps7:
	VMOVUPS (DI), Z16
	VMOVUPS 64(DI), Z17
	BCAST7
	FMA7x32
	ADDQ $4, R8
	ADDQ $4, R10
	ADDQ $4, R11
	ADDQ $128, DI
	DECQ CX
	JNZ taps7

rowdone:
	ADDQ R12, R14
	DECQ AX
	JNZ rows

	ACTIVATE(t32store)
t32store:
	MOVQ outStride+56(FP), R9
	VMOVUPS Z0, (DX)
	VMOVUPS Z1, 64(DX)
	ADDQ R9, DX
	VMOVUPS Z2, (DX)
	VMOVUPS Z3, 64(DX)
	ADDQ R9, DX
	VMOVUPS Z4, (DX)
	VMOVUPS Z5, 64(DX)
	ADDQ R9, DX
	VMOVUPS Z6, (DX)
	VMOVUPS Z7, 64(DX)
	ADDQ R9, DX
	VMOVUPS Z8, (DX)
	VMOVUPS Z9, 64(DX)
	ADDQ R9, DX
	VMOVUPS Z10, (DX)
	VMOVUPS Z11, 64(DX)
	ADDQ R9, DX
	VMOVUPS Z12, (DX)
	VMOVUPS Z13, 64(DX)
	ADDQ R9, DX
	MOVQ pixels+80(FP), BX
	CMPQ BX, $8
	JNE t32done
	VMOVUPS Z14, (DX)
	VMOVUPS Z15, 64(DX)

t32done:
	VZEROUPPER
	RET

// func convTile16(x *float32, pixStride, rowStride, c, k int, w *float32, out *float32, outStride int, bias *float32, act, pixels int)
//
// convTile for pixels (16 or 14) output pixels × 16 channels: one ZMM of
// filters per (tap, channel), sixteen accumulators, the input broadcast
// from memory.
TEXT ·convTile16(SB), NOSPLIT, $0-88
	MOVQ x+0(FP), R14
	MOVQ pixStride+8(FP), R9
	MOVQ rowStride+16(FP), R12
	MOVQ c+24(FP), R13
	MOVQ k+32(FP), BX
	MOVQ w+40(FP), DI

	MOVQ bias+64(FP), AX
	VMOVUPS (AX), Z26
	VMOVAPS Z26, Z0
	VMOVAPS Z26, Z1
	VMOVAPS Z26, Z2
	VMOVAPS Z26, Z3
	VMOVAPS Z26, Z4
	VMOVAPS Z26, Z5
	VMOVAPS Z26, Z6
	VMOVAPS Z26, Z7
	VMOVAPS Z26, Z8
	VMOVAPS Z26, Z9
	VMOVAPS Z26, Z10
	VMOVAPS Z26, Z11
	VMOVAPS Z26, Z12
	VMOVAPS Z26, Z13
	VMOVAPS Z26, Z14
	VMOVAPS Z26, Z15

	MOVQ BX, AX
	IMULQ BX, R13
	MOVQ pixels+80(FP), BX

rows16:
	// Pixels 0, 3, 6, 9, 12 and 15 of this tap row: R8, R10, R11, R15, SI, DX.
	MOVQ R14, R8
	LEAQ (R8)(R9*2), R10
	ADDQ R9, R10
	LEAQ (R10)(R9*2), R11
	ADDQ R9, R11
	LEAQ (R11)(R9*2), R15
	ADDQ R9, R15
	LEAQ (R15)(R9*2), SI
	ADDQ R9, SI
	LEAQ (SI)(R9*2), DX
	ADDQ R9, DX
	MOVQ R13, CX
	CMPQ BX, $16
	JNE taps14

taps16:
	VMOVUPS (DI), Z16
	FMA14x16
	VFMADD231PS.BCST (SI)(R9*2), Z16, Z14
	VFMADD231PS.BCST (DX), Z16, Z15
	ADDQ $4, R8
	ADDQ $4, R10
	ADDQ $4, R11
	ADDQ $4, R15
	ADDQ $4, SI
	ADDQ $4, DX
	ADDQ $64, DI
	DECQ CX
	JNZ taps16
	JMP rowdone16

taps14:
	VMOVUPS (DI), Z16
	FMA14x16
	ADDQ $4, R8
	ADDQ $4, R10
	ADDQ $4, R11
	ADDQ $4, R15
	ADDQ $4, SI
	ADDQ $64, DI
	DECQ CX
	JNZ taps14

rowdone16:
	ADDQ R12, R14
	DECQ AX
	JNZ rows16

	MOVQ out+48(FP), DX
	ACTIVATE(t16store)
t16store:
	MOVQ outStride+56(FP), R9
	VMOVUPS Z0, (DX)
	ADDQ R9, DX
	VMOVUPS Z1, (DX)
	ADDQ R9, DX
	VMOVUPS Z2, (DX)
	ADDQ R9, DX
	VMOVUPS Z3, (DX)
	ADDQ R9, DX
	VMOVUPS Z4, (DX)
	ADDQ R9, DX
	VMOVUPS Z5, (DX)
	ADDQ R9, DX
	VMOVUPS Z6, (DX)
	ADDQ R9, DX
	VMOVUPS Z7, (DX)
	ADDQ R9, DX
	VMOVUPS Z8, (DX)
	ADDQ R9, DX
	VMOVUPS Z9, (DX)
	ADDQ R9, DX
	VMOVUPS Z10, (DX)
	ADDQ R9, DX
	VMOVUPS Z11, (DX)
	ADDQ R9, DX
	VMOVUPS Z12, (DX)
	ADDQ R9, DX
	VMOVUPS Z13, (DX)
	ADDQ R9, DX
	MOVQ pixels+80(FP), BX
	CMPQ BX, $16
	JNE t16done
	VMOVUPS Z14, (DX)
	ADDQ R9, DX
	VMOVUPS Z15, (DX)

t16done:
	VZEROUPPER
	RET

// ACC16(op) applies op to the sixteen accumulator rows: Z0…Z15 at acc +
// f·accStride (R11: acc, R12: accStride, R13: scratch).
#define ACC16(op) MOVQ R11, R13; op (R13), Z0; ADDQ R12, R13; op (R13), Z1; ADDQ R12, R13; op (R13), Z2; ADDQ R12, R13; op (R13), Z3; ADDQ R12, R13; op (R13), Z4; ADDQ R12, R13; op (R13), Z5; ADDQ R12, R13; op (R13), Z6; ADDQ R12, R13; op (R13), Z7; ADDQ R12, R13; op (R13), Z8; ADDQ R12, R13; op (R13), Z9; ADDQ R12, R13; op (R13), Z10; ADDQ R12, R13; op (R13), Z11; ADDQ R12, R13; op (R13), Z12; ADDQ R12, R13; op (R13), Z13; ADDQ R12, R13; op (R13), Z14; ADDQ R12, R13; op (R13), Z15

#define STORE16 MOVQ R11, R13; VMOVUPS Z0, (R13); ADDQ R12, R13; VMOVUPS Z1, (R13); ADDQ R12, R13; VMOVUPS Z2, (R13); ADDQ R12, R13; VMOVUPS Z3, (R13); ADDQ R12, R13; VMOVUPS Z4, (R13); ADDQ R12, R13; VMOVUPS Z5, (R13); ADDQ R12, R13; VMOVUPS Z6, (R13); ADDQ R12, R13; VMOVUPS Z7, (R13); ADDQ R12, R13; VMOVUPS Z8, (R13); ADDQ R12, R13; VMOVUPS Z9, (R13); ADDQ R12, R13; VMOVUPS Z10, (R13); ADDQ R12, R13; VMOVUPS Z11, (R13); ADDQ R12, R13; VMOVUPS Z12, (R13); ADDQ R12, R13; VMOVUPS Z13, (R13); ADDQ R12, R13; VMOVUPS Z14, (R13); ADDQ R12, R13; VMOVUPS Z15, (R13)

// func gradwTile(dz *float32, dzX, dzY int, x *float32, xX, xY, ny, nx int, acc *float32, accStride int)
//
// acc[f][0:16] += Σ_(y<ny, x<nx) dz[y·dzY + x·dzX][f] · x[y·xY + x·xX][0:16] for f < 16
// (strides in bytes), the positions in order, one fused multiply-add each.
TEXT ·gradwTile(SB), NOSPLIT, $0-80
	MOVQ dz+0(FP), SI
	MOVQ dzX+8(FP), R8
	MOVQ dzY+16(FP), R9
	MOVQ x+24(FP), DI
	MOVQ xX+32(FP), R10
	MOVQ xY+40(FP), BX
	MOVQ ny+48(FP), CX
	MOVQ acc+64(FP), R11
	MOVQ accStride+72(FP), R12
	ACC16(VMOVUPS)

gwrow:
	MOVQ SI, AX
	MOVQ DI, DX
	MOVQ nx+56(FP), R14

gwpix:
	VMOVUPS (DX), Z16
	VFMADD231PS.BCST (AX), Z16, Z0
	VFMADD231PS.BCST 4(AX), Z16, Z1
	VFMADD231PS.BCST 8(AX), Z16, Z2
	VFMADD231PS.BCST 12(AX), Z16, Z3
	VFMADD231PS.BCST 16(AX), Z16, Z4
	VFMADD231PS.BCST 20(AX), Z16, Z5
	VFMADD231PS.BCST 24(AX), Z16, Z6
	VFMADD231PS.BCST 28(AX), Z16, Z7
	VFMADD231PS.BCST 32(AX), Z16, Z8
	VFMADD231PS.BCST 36(AX), Z16, Z9
	VFMADD231PS.BCST 40(AX), Z16, Z10
	VFMADD231PS.BCST 44(AX), Z16, Z11
	VFMADD231PS.BCST 48(AX), Z16, Z12
	VFMADD231PS.BCST 52(AX), Z16, Z13
	VFMADD231PS.BCST 56(AX), Z16, Z14
	VFMADD231PS.BCST 60(AX), Z16, Z15
	ADDQ R8, AX
	ADDQ R10, DX
	DECQ R14
	JNZ gwpix

	ADDQ R9, SI
	ADDQ BX, DI
	DECQ CX
	JNZ gwrow

	STORE16
	VZEROUPPER
	RET
