#include "textflag.h"

// func fixed4(into *int64, vs *float32, n int, add bool) int
//
// From the start, four at a time while every value of a block satisfies
// |v·2^40| < 2^51 (NaN does not): into[i] += RoundToEven(v·2^40), or =
// when add is false — the
// same integers as ToFixed. v·2^40 is exact in float64; adding 1.5·2^52
// rounds it to an integer (to even, the default rounding) in a binade
// whose unit is 1, and subtracting that constant's bits leaves the
// integer. Returns how many values it added (a multiple of 4): the block
// after them, if any, is the Go loop's to convert or refuse.
TEXT ·fixed4(SB), NOSPLIT, $0-40
	MOVQ into+0(FP), DI
	MOVQ vs+8(FP), SI
	MOVQ n+16(FP), CX
	MOVBQZX add+24(FP), BX
	XORQ AX, AX
	SHRQ $2, CX
	JZ   done
	MOVQ $0x4270000000000000, DX // 2^40
	MOVQ DX, X8
	VBROADCASTSD X8, Y8
	MOVQ $0x4338000000000000, DX // 1.5·2^52
	MOVQ DX, X9
	VBROADCASTSD X9, Y9
	MOVQ $0x4320000000000000, DX // 2^51
	MOVQ DX, X10
	VBROADCASTSD X10, Y10
	MOVQ $0x7fffffffffffffff, DX // |·|
	MOVQ DX, X11
	VBROADCASTSD X11, Y11

loop:
	VCVTPS2PD (SI), Y0           // four float32 → float64, exact
	VMULPD    Y8, Y0, Y0         // ·2^40, exact
	VANDPD    Y11, Y0, Y1
	VCMPPD    $0x11, Y10, Y1, Y2 // |x| < 2^51, false for NaN
	VMOVMSKPD Y2, DX
	CMPQ      DX, $15
	JNE       done
	VADDPD    Y9, Y0, Y0         // rounds to an integer, to even
	VPSUBQ    Y9, Y0, Y0         // the integer, as int64
	TESTQ     BX, BX
	JZ        store
	VPADDQ    (DI), Y0, Y0

store:
	VMOVDQU   Y0, (DI)
	ADDQ      $16, SI
	ADDQ      $32, DI
	ADDQ      $4, AX
	DECQ      CX
	JNZ       loop

done:
	MOVQ AX, ret+32(FP)
	VZEROUPPER
	RET

// func fixedSum16(into *int64, vs **float32, m, from, n int, add bool) int
//
// fixed4 with AVX-512 over m vectors of n values at once (m = 1: one
// vector), from index from: into[i] (+)= Σ_j RoundToEven(vs[j][i]·2^40),
// sixteen at a time, each sum in registers and into written once, over
// every value ToFixed takes. It stops before the first block in which a
// value of any of the vectors has |v| ≥ 2^20 (FixedLimit; magnitudes
// compare as integers, as in fixable8, so NaN and ±Inf stop it), leaving
// that block of into as it was, or where fewer than sixteen values are
// left; returns the index it stopped at. v·2^40 is exact in float64 and
// below 2^60; VCVTPD2QQ with embedded round-to-nearest-even gives the
// integer ToFixed gives.
TEXT ·fixedSum16(SB), NOSPLIT, $0-56
	MOVQ    into+0(FP), DI
	MOVQ    vs+8(FP), R8
	MOVQ    m+16(FP), R9
	MOVQ    from+24(FP), AX
	MOVQ    n+32(FP), CX
	MOVBQZX add+40(FP), BX
	SUBQ    AX, CX
	JLE     sdone
	SHRQ    $4, CX
	JZ      sdone
	TESTQ   R9, R9
	JZ      sdone
	MOVL    $0x7fffffff, DX // |·|
	VPBROADCASTD DX, Z10
	MOVL    $0x49800000, DX // 2^20
	VPBROADCASTD DX, Z11
	MOVQ    $0x4270000000000000, DX // 2^40
	VPBROADCASTQ DX, Z12

sloop:
	VPXORQ    Z4, Z4, Z4
	VPXORQ    Z5, Z5, Z5
	TESTQ     BX, BX
	JZ        sfirst
	VMOVDQU64 (DI)(AX*8), Z4
	VMOVDQU64 64(DI)(AX*8), Z5

sfirst:
	XORQ R10, R10

svec:
	MOVQ          (R8)(R10*8), R11
	VMOVDQU32     (R11)(AX*4), Z0
	VPANDD        Z10, Z0, Z1
	VPCMPD        $1, Z11, Z1, K1 // |v| < 2^20
	KORTESTW      K1, K1
	JCC           sdone           // not all sixteen: into's block untouched
	VCVTPS2PD     Y0, Z2
	VEXTRACTF32X8 $1, Z0, Y3
	VCVTPS2PD     Y3, Z3
	VMULPD        Z12, Z2, Z2
	VMULPD        Z12, Z3, Z3
	VCVTPD2QQ.RN_SAE Z2, Z2
	VCVTPD2QQ.RN_SAE Z3, Z3
	VPADDQ        Z2, Z4, Z4
	VPADDQ        Z3, Z5, Z5
	INCQ          R10
	CMPQ          R10, R9
	JLT           svec
	VMOVDQU64     Z4, (DI)(AX*8)
	VMOVDQU64     Z5, 64(DI)(AX*8)
	ADDQ          $16, AX
	DECQ          CX
	JNZ           sloop

sdone:
	MOVQ AX, ret+48(FP)
	VZEROUPPER
	RET

// func fromFixed8(dst *float32, q, add *int64, n int)
//
// dst[i] = float32(float64(q[i]+add[i]) · 2^-40) for the n/8 blocks of
// eight: VCVTQQ2PD rounds to nearest even as CVTSQ2SD does, the product
// is exact, and VCVTPD2PS rounds as CVTSD2SS — FromFixed's bits.
TEXT ·fromFixed8(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ q+8(FP), SI
	MOVQ add+16(FP), DX
	MOVQ n+24(FP), CX
	SHRQ $3, CX
	JZ   fdone
	MOVQ $0x3d70000000000000, AX // 2^-40
	MOVQ AX, X8
	VBROADCASTSD X8, Z8

floop:
	VMOVDQU64 (SI), Z0
	VPADDQ    (DX), Z0, Z0
	VCVTQQ2PD Z0, Z0
	VMULPD    Z8, Z0, Z0
	VCVTPD2PS Z0, Y0
	VMOVUPS   Y0, (DI)
	ADDQ      $64, SI
	ADDQ      $64, DX
	ADDQ      $32, DI
	DECQ      CX
	JNZ       floop

fdone:
	VZEROUPPER
	RET

// func fixable8(vs *float32, n int) int
//
// From the start, eight at a time while every value of a block has
// |v| < 2^20 (FixedLimit; NaN and ±Inf do not: their magnitude bits are
// above it): returns how many values passed (a multiple of 8), so that
// the block after them, if any, is the Go loop's to find the value
// ToFixed refuses. Magnitudes compare as integers: float32 bits without
// the sign order as the values do.
TEXT ·fixable8(SB), NOSPLIT, $0-24
	MOVQ vs+0(FP), SI
	MOVQ n+8(FP), CX
	XORQ AX, AX
	SHRQ $3, CX
	JZ   cdone
	MOVQ $0x7fffffff, DX // |·|
	MOVQ DX, X8
	VPBROADCASTD X8, Y8
	MOVQ $0x49800000, DX // 2^20
	MOVQ DX, X9
	VPBROADCASTD X9, Y9

cloop:
	VPAND     (SI), Y8, Y0
	VPCMPGTD  Y0, Y9, Y1 // 2^20 > |v|
	VMOVMSKPS Y1, DX
	CMPQ      DX, $0xff
	JNE       cdone
	ADDQ      $32, SI
	ADDQ      $8, AX
	DECQ      CX
	JNZ       cloop

cdone:
	MOVQ AX, ret+16(FP)
	VZEROUPPER
	RET
