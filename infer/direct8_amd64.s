#include "textflag.h"

// ALL16(op, r) applies op r to each of the sixteen accumulators Z0…Z15.
#define ALL16(op, r) op r, Z0, Z0; op r, Z1, Z1; op r, Z2, Z2; op r, Z3, Z3; op r, Z4, Z4; op r, Z5, Z5; op r, Z6, Z6; op r, Z7, Z7; op r, Z8, Z8; op r, Z9, Z9; op r, Z10, Z10; op r, Z11, Z11; op r, Z12, Z12; op r, Z13, Z13; op r, Z14, Z14; op r, Z15, Z15

// ALL16R(op, r) applies op with r as its first source: op Zi, r, Zi.
#define ALL16R(op, r) op Z0, r, Z0; op Z1, r, Z1; op Z2, r, Z2; op Z3, r, Z3; op Z4, r, Z4; op Z5, r, Z5; op Z6, r, Z6; op Z7, r, Z7; op Z8, r, Z8; op Z9, r, Z9; op Z10, r, Z10; op Z11, r, Z11; op Z12, r, Z12; op Z13, r, Z13; op Z14, r, Z14; op Z15, r, Z15

// func convTileU8(x *uint8, pixStride, rowStride, k, t4 int, w *int8, out *float32, outStride int, corr *int32, scale, bias *float32, act, n, mask int)
//
// One tile of the integer direct convolution: 16 output pixels (pixStride
// bytes apart in the padded image of unsigned codes, rows rowStride apart)
// × 16 channels. For each of k tap rows, t4 groups of 4 bytes of each
// pixel (its tap row's K·C codes, contiguous) are broadcast and multiplied
// with the 16 channels' signed weights [t4][16][4] (VPDPBUSD: exact int32
// sums). Then per channel y = float(Σ − corr)·scale + bias, act (1: ReLU,
// 2: ReLU6), and the first n pixels' lanes in mask stored at out +
// p·outStride bytes. Z0…Z15 accumulate pixel p = 0…15; pixel p reads
// R8 + p·R9 through the bases R10 = +3, R11 = +6, R12 = +7, R13 = +12.
TEXT ·convTileU8(SB), NOSPLIT, $0-112
	MOVQ x+0(FP), R14
	MOVQ pixStride+8(FP), R9
	MOVQ rowStride+16(FP), SI
	MOVQ k+24(FP), AX
	MOVQ w+40(FP), DI
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15

u8rows:
	MOVQ R14, R8
	LEAQ (R8)(R9*2), R10
	ADDQ R9, R10           // +3
	LEAQ (R10)(R9*2), R11
	ADDQ R9, R11           // +6
	LEAQ (R11)(R9*1), R12  // +7
	LEAQ (R10)(R9*8), R13
	ADDQ R9, R13           // +12
	MOVQ t4+32(FP), CX

u8taps:
	VMOVDQU32 (DI), Z16
	VPBROADCASTD (R8), Z17
	VPDPBUSD Z16, Z17, Z0
	VPBROADCASTD (R8)(R9*1), Z18
	VPDPBUSD Z16, Z18, Z1
	VPBROADCASTD (R8)(R9*2), Z19
	VPDPBUSD Z16, Z19, Z2
	VPBROADCASTD (R10), Z20
	VPDPBUSD Z16, Z20, Z3
	VPBROADCASTD (R8)(R9*4), Z21
	VPDPBUSD Z16, Z21, Z4
	VPBROADCASTD (R10)(R9*2), Z22
	VPDPBUSD Z16, Z22, Z5
	VPBROADCASTD (R11), Z23
	VPDPBUSD Z16, Z23, Z6
	VPBROADCASTD (R12), Z24
	VPDPBUSD Z16, Z24, Z7
	VPBROADCASTD (R8)(R9*8), Z17
	VPDPBUSD Z16, Z17, Z8
	VPBROADCASTD (R12)(R9*2), Z18
	VPDPBUSD Z16, Z18, Z9
	VPBROADCASTD (R11)(R9*4), Z19
	VPDPBUSD Z16, Z19, Z10
	VPBROADCASTD (R10)(R9*8), Z20
	VPDPBUSD Z16, Z20, Z11
	VPBROADCASTD (R13), Z21
	VPDPBUSD Z16, Z21, Z12
	VPBROADCASTD (R13)(R9*1), Z22
	VPDPBUSD Z16, Z22, Z13
	VPBROADCASTD (R11)(R9*8), Z23
	VPDPBUSD Z16, Z23, Z14
	VPBROADCASTD (R12)(R9*8), Z24
	VPDPBUSD Z16, Z24, Z15
	ADDQ $4, R8
	ADDQ $4, R10
	ADDQ $4, R11
	ADDQ $4, R12
	ADDQ $4, R13
	ADDQ $64, DI
	DECQ CX
	JNZ u8taps

	ADDQ SI, R14
	DECQ AX
	JNZ u8rows

	MOVQ corr+64(FP), BX
	VMOVDQU32 (BX), Z25
	MOVQ scale+72(FP), BX
	VMOVUPS (BX), Z26
	MOVQ bias+80(FP), BX
	VMOVUPS (BX), Z27
	ALL16(VPSUBD, Z25)
	VCVTDQ2PS Z0, Z0
	VCVTDQ2PS Z1, Z1
	VCVTDQ2PS Z2, Z2
	VCVTDQ2PS Z3, Z3
	VCVTDQ2PS Z4, Z4
	VCVTDQ2PS Z5, Z5
	VCVTDQ2PS Z6, Z6
	VCVTDQ2PS Z7, Z7
	VCVTDQ2PS Z8, Z8
	VCVTDQ2PS Z9, Z9
	VCVTDQ2PS Z10, Z10
	VCVTDQ2PS Z11, Z11
	VCVTDQ2PS Z12, Z12
	VCVTDQ2PS Z13, Z13
	VCVTDQ2PS Z14, Z14
	VCVTDQ2PS Z15, Z15
	ALL16(VMULPS, Z26)
	ALL16(VADDPS, Z27)
	MOVQ act+88(FP), BX
	CMPQ BX, $0
	JEQ u8store
	VXORPS Z28, Z28, Z28
	CMPQ BX, $2
	JEQ u8relu6
	ALL16R(VMAXPS, Z28) // ReLU: max with the sum second (a −0 stays)
	JMP u8store

u8relu6:
	ALL16(VMAXPS, Z28)
	MOVL $0x40c00000, BX
	VPBROADCASTD BX, Z29
	ALL16(VMINPS, Z29)

u8store:
	MOVQ mask+104(FP), BX
	KMOVW BX, K1
	MOVQ out+48(FP), DX
	MOVQ outStride+56(FP), R9
	MOVQ n+96(FP), CX
	VMOVUPS Z0, K1, (DX)
	DECQ CX
	JZ u8done
	ADDQ R9, DX
	VMOVUPS Z1, K1, (DX)
	DECQ CX
	JZ u8done
	ADDQ R9, DX
	VMOVUPS Z2, K1, (DX)
	DECQ CX
	JZ u8done
	ADDQ R9, DX
	VMOVUPS Z3, K1, (DX)
	DECQ CX
	JZ u8done
	ADDQ R9, DX
	VMOVUPS Z4, K1, (DX)
	DECQ CX
	JZ u8done
	ADDQ R9, DX
	VMOVUPS Z5, K1, (DX)
	DECQ CX
	JZ u8done
	ADDQ R9, DX
	VMOVUPS Z6, K1, (DX)
	DECQ CX
	JZ u8done
	ADDQ R9, DX
	VMOVUPS Z7, K1, (DX)
	DECQ CX
	JZ u8done
	ADDQ R9, DX
	VMOVUPS Z8, K1, (DX)
	DECQ CX
	JZ u8done
	ADDQ R9, DX
	VMOVUPS Z9, K1, (DX)
	DECQ CX
	JZ u8done
	ADDQ R9, DX
	VMOVUPS Z10, K1, (DX)
	DECQ CX
	JZ u8done
	ADDQ R9, DX
	VMOVUPS Z11, K1, (DX)
	DECQ CX
	JZ u8done
	ADDQ R9, DX
	VMOVUPS Z12, K1, (DX)
	DECQ CX
	JZ u8done
	ADDQ R9, DX
	VMOVUPS Z13, K1, (DX)
	DECQ CX
	JZ u8done
	ADDQ R9, DX
	VMOVUPS Z14, K1, (DX)
	DECQ CX
	JZ u8done
	ADDQ R9, DX
	VMOVUPS Z15, K1, (DX)

u8done:
	VZEROUPPER
	RET

