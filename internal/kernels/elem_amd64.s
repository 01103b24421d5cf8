#include "textflag.h"

// EXP sets Z3 = Exp(Z2) for Z2 ≤ 0 (Exp's float32 operations in its
// order, 0 below its low cut), with Exp's constants in Z18–Z29 and 0 in
// Z9; it uses Z4–Z7 and K1.
#define EXP \
	VMULPS Z18, Z2, Z4 \
	VADDPS Z19, Z4, Z4 \
	VSUBPS Z19, Z4, Z4 \
	VMULPS Z20, Z4, Z5 \
	VSUBPS Z5, Z2, Z5 \
	VMULPS Z21, Z4, Z6 \
	VSUBPS Z6, Z5, Z5 \
	VMULPS Z29, Z5, Z6 \
	VADDPS Z28, Z6, Z6 \
	VMULPS Z6, Z5, Z6 \
	VADDPS Z27, Z6, Z6 \
	VMULPS Z6, Z5, Z6 \
	VADDPS Z26, Z6, Z6 \
	VMULPS Z6, Z5, Z6 \
	VADDPS Z25, Z6, Z6 \
	VMULPS Z6, Z5, Z6 \
	VADDPS Z24, Z6, Z6 \
	VMULPS Z6, Z5, Z6 \
	VADDPS Z23, Z6, Z6 \
	VMULPS Z6, Z5, Z6 \
	VADDPS Z23, Z6, Z6 \
	VCVTTPS2DQ Z4, Z7 \
	VPSLLD $23, Z7, Z7 \
	VPADDD Z7, Z6, Z3 \
	VCMPPS $1, Z22, Z2, K1 \
	VMOVAPS Z9, K1, Z3

// LANESUM sets X0 to the sum of the sixteen float64 lanes of Z0 and Z1
// (Z0 + Z1, then halves folded); it uses Y1 and X1.
#define LANESUM \
	VADDPD Z1, Z0, Z0 \
	VEXTRACTF64X4 $1, Z0, Y1 \
	VADDPD Y1, Y0, Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPD X1, X0, X0 \
	VPERMILPD $1, X0, X1 \
	VADDSD X1, X0, X0

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

// func geluPass(y, x, dy *float32, n int, k *[20]float32)
//
// y = x·Φ(x), or with dy not nil y = dy·(Φ(x) + x·φ(x)), 16 at a time:
// NormalParts and Exp's float32 operations in their order (k holds their
// constants as GELUPass's geluK lists them; Exp's argument −x²/2 is never
// positive, so only its low cut applies).
TEXT ·geluPass(SB), NOSPLIT, $0-40
	MOVQ y+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ dy+16(FP), DX
	MOVQ n+24(FP), CX
	MOVQ k+32(FP), AX
	VBROADCASTSS 0(AX), Z10  // 1/√2
	VBROADCASTSS 4(AX), Z11  // p
	VBROADCASTSS 8(AX), Z12  // a1
	VBROADCASTSS 12(AX), Z13 // a2
	VBROADCASTSS 16(AX), Z14 // a3
	VBROADCASTSS 20(AX), Z15 // a4
	VBROADCASTSS 24(AX), Z16 // a5
	VBROADCASTSS 28(AX), Z17 // 1/√(2π)
	VBROADCASTSS 32(AX), Z18 // log2 e
	VBROADCASTSS 36(AX), Z19 // 1.5·2²³
	VBROADCASTSS 40(AX), Z20 // ln 2, high part
	VBROADCASTSS 44(AX), Z21 // ln 2, low part
	VBROADCASTSS 48(AX), Z22 // −87.3
	VBROADCASTSS 52(AX), Z23 // 1
	VBROADCASTSS 56(AX), Z24 // 0.5
	VBROADCASTSS 60(AX), Z25 // 1/6
	VBROADCASTSS 64(AX), Z26 // 1/24
	VBROADCASTSS 68(AX), Z27 // 1/120
	VBROADCASTSS 72(AX), Z28 // 1/720
	VBROADCASTSS 76(AX), Z29 // 1/5040
	MOVL $0x7fffffff, BX
	VPBROADCASTD BX, Z30
	MOVL $0x80000000, BX
	VPBROADCASTD BX, Z31
	VXORPS Z9, Z9, Z9
	SHRQ $4, CX
	JZ gpdone

gploop:
	VMOVUPS (SI), Z0
	VMULPS Z10, Z0, Z1 // z = x/√2
	VANDPS Z30, Z1, Z1 // |z|
	VXORPS Z31, Z1, Z2
	VMULPS Z1, Z2, Z2  // −z·z

	// e = Exp(−z·z)
	EXP

	// t = 1/(1 + p·z), the polynomial, half = ±(1 − poly·e)/2
	VMULPS Z11, Z1, Z4
	VADDPS Z23, Z4, Z4
	VDIVPS Z4, Z23, Z5
	VMULPS Z16, Z5, Z6
	VADDPS Z15, Z6, Z6
	VMULPS Z6, Z5, Z6
	VADDPS Z14, Z6, Z6
	VMULPS Z6, Z5, Z6
	VADDPS Z13, Z6, Z6
	VMULPS Z6, Z5, Z6
	VADDPS Z12, Z6, Z6
	VMULPS Z6, Z5, Z6  // poly
	VMULPS Z3, Z6, Z6
	VSUBPS Z6, Z23, Z6
	VMULPS Z24, Z6, Z6 // half
	VCMPPS $1, Z9, Z0, K2
	VXORPS Z31, Z6, K2, Z6
	VADDPS Z24, Z6, Z6 // Φ

	TESTQ DX, DX
	JNZ gpgrad
	VMULPS Z6, Z0, Z7
	VMOVUPS Z7, (DI)
	JMP gpnext

gpgrad:
	VMULPS Z17, Z3, Z7 // φ
	VMULPS Z7, Z0, Z7
	VADDPS Z7, Z6, Z7  // Φ + x·φ
	VMULPS (DX), Z7, Z7
	VMOVUPS Z7, (DI)
	ADDQ $64, DX

gpnext:
	ADDQ $64, SI
	ADDQ $64, DI
	DECQ CX
	JNZ gploop

gpdone:
	VZEROUPPER
	RET

// func expShift(x *float32, n int, m float32, k *[20]float32)
//
// x = Exp(x − m) in place, 16 at a time, for x − m ≤ 0 (a softmax row
// less its maximum): Exp's float32 operations in its order, 0 below its
// low cut, a NaN kept.
TEXT ·expShift(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS m+16(FP), Z8
	MOVQ k+24(FP), AX
	VBROADCASTSS 32(AX), Z18 // log2 e
	VBROADCASTSS 36(AX), Z19 // 1.5·2²³
	VBROADCASTSS 40(AX), Z20 // ln 2, high part
	VBROADCASTSS 44(AX), Z21 // ln 2, low part
	VBROADCASTSS 48(AX), Z22 // −87.3
	VBROADCASTSS 52(AX), Z23 // 1
	VBROADCASTSS 56(AX), Z24 // 0.5
	VBROADCASTSS 60(AX), Z25 // 1/6
	VBROADCASTSS 64(AX), Z26 // 1/24
	VBROADCASTSS 68(AX), Z27 // 1/120
	VBROADCASTSS 72(AX), Z28 // 1/720
	VBROADCASTSS 76(AX), Z29 // 1/5040
	VXORPS Z9, Z9, Z9
	SHRQ $4, CX
	JZ esdone

esloop:
	VMOVUPS (SI), Z2
	VSUBPS Z8, Z2, Z2  // x − m
	EXP
	VCMPPS $3, Z2, Z2, K3
	VMOVAPS Z2, K3, Z3 // a NaN stays
	VMOVUPS Z3, (SI)
	ADDQ $64, SI
	DECQ CX
	JNZ esloop

esdone:
	VZEROUPPER
	RET

// func squaresLanes(x *float32, n int, mu float64) float64
//
// The sum of the squared distances of n floats (n a multiple of 16) from
// mu, in float64: sixteen lanes, added together at the end.
TEXT ·squaresLanes(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSD mu+16(FP), Z5
	SHRQ $4, CX
	VXORPD Z0, Z0, Z0
	VXORPD Z1, Z1, Z1
	JZ sqsum

sqloop:
	VCVTPS2PD (SI), Z2
	VCVTPS2PD 32(SI), Z3
	VSUBPD Z5, Z2, Z2
	VSUBPD Z5, Z3, Z3
	VFMADD231PD Z2, Z2, Z0
	VFMADD231PD Z3, Z3, Z1
	ADDQ $64, SI
	DECQ CX
	JNZ sqloop

sqsum:
	LANESUM
	VMOVSD X0, ret+24(FP)
	VZEROUPPER
	RET

// func normalizeRow(y, x, gamma, beta *float32, n int, m, inv float32)
//
// y = (x − m)·inv·γ + β, 16 at a time (n a multiple of 16), each product
// and sum rounded as normalize's are.
TEXT ·normalizeRow(SB), NOSPLIT, $0-48
	MOVQ y+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ gamma+16(FP), AX
	MOVQ beta+24(FP), BX
	MOVQ n+32(FP), CX
	VBROADCASTSS m+40(FP), Z6
	VBROADCASTSS inv+44(FP), Z7
	SHRQ $4, CX
	JZ nrdone

nrloop:
	VMOVUPS (SI), Z0
	VSUBPS Z6, Z0, Z0
	VMULPS Z7, Z0, Z0
	VMULPS (AX), Z0, Z0
	VADDPS (BX), Z0, Z0
	VMOVUPS Z0, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	ADDQ $64, AX
	ADDQ $64, BX
	DECQ CX
	JNZ nrloop

nrdone:
	VZEROUPPER
	RET

// func maxLanes(x *float32, n int) float32
//
// The largest of n floats (n a positive multiple of 16).
TEXT ·maxLanes(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	SHRQ $4, CX
	VMOVUPS (SI), Z0

mlloop:
	VMAXPS (SI), Z0, Z0
	ADDQ $64, SI
	DECQ CX
	JNZ mlloop
	VEXTRACTF32X8 $1, Z0, Y1
	VMAXPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0x4e, X0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VMAXPS X1, X0, X0
	VMOVSS X0, ret+16(FP)
	VZEROUPPER
	RET

// func sumLanes(x *float32, n int) float64
//
// The sum of n floats (n a multiple of 16) in float64: sixteen lanes, added
// together at the end.
TEXT ·sumLanes(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	SHRQ $4, CX
	VXORPD Z0, Z0, Z0
	VXORPD Z1, Z1, Z1
	JZ slsum

slloop:
	VCVTPS2PD (SI), Z2
	VCVTPS2PD 32(SI), Z3
	VADDPD Z2, Z0, Z0
	VADDPD Z3, Z1, Z1
	ADDQ $64, SI
	DECQ CX
	JNZ slloop

slsum:
	LANESUM
	VMOVSD X0, ret+16(FP)
	VZEROUPPER
	RET

// func scaleLanes(x *float32, n int, a float32)
//
// x *= a for n floats (n a multiple of 16).
TEXT ·scaleLanes(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS a+16(FP), Z1
	SHRQ $4, CX
	JZ scdone

scloop:
	VMULPS (SI), Z1, Z0
	VMOVUPS Z0, (SI)
	ADDQ $64, SI
	DECQ CX
	JNZ scloop

scdone:
	VZEROUPPER
	RET
