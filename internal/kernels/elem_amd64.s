#include "textflag.h"

// func addAct(dst, a, b *float32, n, act int)
//
// dst = act(a + b), 16 at a time. ReLU is VMAXPS with the sum as its
// second source (a −0 sum stays −0, as in Go's v < 0 test); ReLU6 takes
// max(v, 0) with 0 second (−0 becomes +0, as Go's max), then min(·, 6).
TEXT ·addAct(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), BX
	MOVQ n+24(FP), CX
	MOVQ act+32(FP), AX
	VXORPS Z1, Z1, Z1
	MOVL $0x40c00000, DX // 6.0
	VPBROADCASTD DX, Z2
	SHRQ $4, CX
	JZ aadone
	CMPQ AX, $1
	JEQ aarelu
	CMPQ AX, $2
	JEQ aarelu6

aanone:
	VMOVUPS (SI), Z0
	VADDPS (BX), Z0, Z0
	VMOVUPS Z0, (DI)
	ADDQ $64, SI
	ADDQ $64, BX
	ADDQ $64, DI
	DECQ CX
	JNZ aanone
	JMP aadone

aarelu:
	VMOVUPS (SI), Z0
	VADDPS (BX), Z0, Z0
	VMAXPS Z0, Z1, Z0
	VMOVUPS Z0, (DI)
	ADDQ $64, SI
	ADDQ $64, BX
	ADDQ $64, DI
	DECQ CX
	JNZ aarelu
	JMP aadone

aarelu6:
	VMOVUPS (SI), Z0
	VADDPS (BX), Z0, Z0
	VMAXPS Z1, Z0, Z0
	VMINPS Z2, Z0, Z0
	VMOVUPS Z0, (DI)
	ADDQ $64, SI
	ADDQ $64, BX
	ADDQ $64, DI
	DECQ CX
	JNZ aarelu6

aadone:
	VZEROUPPER
	RET

// func fakeQuant(x *float32, n int, q *FakeQuant)
//
// x = (min(max(roundeven(x·inv) + zero, qmin), qmax) − zero)·scale, 16
// at a time: the operations of FakeQuant.Code in its order (rounding to
// nearest even gives the magic-number sum's integer; a −0 it keeps where
// that gives +0 disappears in the + zero).
TEXT ·fakeQuant(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ q+16(FP), DX
	VBROADCASTSS 0(DX), Z3  // scale
	VBROADCASTSS 4(DX), Z4  // inv
	VBROADCASTSS 8(DX), Z5  // zero
	VBROADCASTSS 12(DX), Z6 // qmin
	VBROADCASTSS 16(DX), Z7 // qmax
	SHRQ $4, CX
	JZ fqdone

fqloop:
	VMOVUPS (SI), Z0
	VMULPS Z4, Z0, Z0
	VRNDSCALEPS $0, Z0, Z0
	VADDPS Z5, Z0, Z0
	VMAXPS Z6, Z0, Z0
	VMINPS Z7, Z0, Z0
	VSUBPS Z5, Z0, Z0
	VMULPS Z3, Z0, Z0
	VMOVUPS Z0, (SI)
	ADDQ $64, SI
	DECQ CX
	JNZ fqloop

fqdone:
	VZEROUPPER
	RET
