#include "textflag.h"

// FIXED4CONSTS loads fixed4's constants as four float64 lanes: Y8 2^40,
// Y9 1.5·2^52, Y10 2^51, Y11 the mask of a magnitude's bits (DX used).
#define FIXED4CONSTS \
	MOVQ $0x4270000000000000, DX; \
	MOVQ DX, X8; \
	VBROADCASTSD X8, Y8; \
	MOVQ $0x4338000000000000, DX; \
	MOVQ DX, X9; \
	VBROADCASTSD X9, Y9; \
	MOVQ $0x4320000000000000, DX; \
	MOVQ DX, X10; \
	VBROADCASTSD X10, Y10; \
	MOVQ $0x7fffffffffffffff, DX; \
	MOVQ DX, X11; \
	VBROADCASTSD X11, Y11

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
	FIXED4CONSTS

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

// func fixedSum8(into *int64, vs **float32, m, from, n int, add bool) int
//
// fixedSum16 with AVX2 alone, eight at a time, over the values fixed4
// takes: it stops before the first block in which a value of any of the
// vectors has |v·2^40| ≥ 2^51 (NaN too), leaving that block of into as it
// was, or where fewer than eight values are left; returns the index it
// stopped at. Each value is rounded to an integer as fixed4 rounds it.
TEXT ·fixedSum8(SB), NOSPLIT, $0-56
	MOVQ    into+0(FP), DI
	MOVQ    vs+8(FP), R8
	MOVQ    m+16(FP), R9
	MOVQ    from+24(FP), AX
	MOVQ    n+32(FP), CX
	MOVBQZX add+40(FP), BX
	SUBQ    AX, CX
	JLE     edone
	SHRQ    $3, CX
	JZ      edone
	TESTQ   R9, R9
	JZ      edone
	FIXED4CONSTS

eloop:
	VPXOR Y4, Y4, Y4
	VPXOR Y5, Y5, Y5
	TESTQ BX, BX
	JZ    efirst
	VMOVDQU (DI)(AX*8), Y4
	VMOVDQU 32(DI)(AX*8), Y5

efirst:
	XORQ R10, R10

evec:
	MOVQ      (R8)(R10*8), R11
	VCVTPS2PD (R11)(AX*4), Y0    // four float32 → float64, exact
	VCVTPS2PD 16(R11)(AX*4), Y1
	VMULPD    Y8, Y0, Y0         // ·2^40, exact
	VMULPD    Y8, Y1, Y1
	VANDPD    Y11, Y0, Y2
	VANDPD    Y11, Y1, Y3
	VCMPPD    $0x11, Y10, Y2, Y2 // |x| < 2^51, false for NaN
	VCMPPD    $0x11, Y10, Y3, Y3
	VANDPD    Y3, Y2, Y2
	VMOVMSKPD Y2, DX
	CMPQ      DX, $15
	JNE       edone              // not all eight: into's block untouched
	VADDPD    Y9, Y0, Y0         // rounds to an integer, to even
	VADDPD    Y9, Y1, Y1
	VPSUBQ    Y9, Y0, Y0         // the integer, as int64
	VPSUBQ    Y9, Y1, Y1
	VPADDQ    Y0, Y4, Y4
	VPADDQ    Y1, Y5, Y5
	INCQ      R10
	CMPQ      R10, R9
	JLT       evec
	VMOVDQU   Y4, (DI)(AX*8)
	VMOVDQU   Y5, 32(DI)(AX*8)
	ADDQ      $8, AX
	DECQ      CX
	JNZ       eloop

edone:
	MOVQ AX, ret+48(FP)
	VZEROUPPER
	RET

// func fromFixed4(dst *float32, q, add *int64, n int) int
//
// fromFixed8 with AVX2 alone, four at a time while every sum of a block
// has |q+add| < 2^51: the sum's bits added to 1.5·2^52's are that float64
// plus the sum, exactly; subtracting 1.5·2^52 leaves the sum as a float64
// (exact, as CVTSQ2SD's below 2^53), the product with 2^-40 is exact, and
// VCVTPD2PS rounds as CVTSD2SS — FromFixed's bits. Returns how many it
// converted (a multiple of 4); the block after them, if any, is the Go
// loop's.
TEXT ·fromFixed4(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ q+8(FP), SI
	MOVQ add+16(FP), DX
	MOVQ n+24(FP), CX
	XORQ AX, AX
	SHRQ $2, CX
	JZ   gdone
	MOVQ $0x3d70000000000000, R8 // 2^-40
	MOVQ R8, X8
	VBROADCASTSD X8, Y8
	MOVQ $0x4338000000000000, R8 // 1.5·2^52
	MOVQ R8, X9
	VBROADCASTSD X9, Y9
	MOVQ $0x0008000000000000, R8 // 2^51
	MOVQ R8, X10
	VPBROADCASTQ X10, Y10

gloop:
	VMOVDQU (SI)(AX*8), Y0
	VPADDQ  (DX)(AX*8), Y0, Y0
	VPADDQ  Y10, Y0, Y1          // in [0, 2^52) iff the sum is in [-2^51, 2^51)
	VPSRLQ  $52, Y1, Y1
	VPTEST  Y1, Y1
	JNZ     gdone
	VPADDQ  Y9, Y0, Y0           // 1.5·2^52 + q, as a float64's bits
	VSUBPD  Y9, Y0, Y0           // q, exactly
	VMULPD  Y8, Y0, Y0
	VCVTPD2PSY Y0, X0
	VMOVUPS X0, (DI)(AX*4)
	ADDQ    $4, AX
	DECQ    CX
	JNZ     gloop

gdone:
	MOVQ AX, ret+32(FP)
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

// ---- fixedChain (generated) ----

// INRANGE sets the flags for JCC to jump unless all sixteen float32 of z
// have |v| < 2^20 (as integers: NaN and ±Inf fail), as fixedSum16 checks.
#define INRANGE(z) \
	VPANDD Z28, z, Z24; \
	VPCMPD $1, Z29, Z24, K5; \
	KORTESTW K5, K5

// TOFIXED converts z's sixteen float32 to int64 as ToFixed does, the low
// eight into Z24 and the high eight into Z25: z·2^40 in float32 is exact
// (|z| < 2^20 after INRANGE; a subnormal's exponent only grows), and
// converting it to int64 rounds to nearest, ties to even, as ToFixed's
// float64 product does — one multiply for sixteen values instead of two
// widenings and two multiplies (y is z's low half, unused).
#define TOFIXED(z, y) \
	VMULPS Z31, z, Z25; \
	VCVTPS2QQ.RN_SAE Y25, Z24; \
	VEXTRACTF32X8 $1, Z25, Y25; \
	VCVTPS2QQ.RN_SAE Y25, Z25

// SETFIXED stores Z24 and Z25 at lo and hi; ADDFIXED adds them there.
#define SETFIXED(lo, hi) \
	VMOVDQU64 Z24, lo; \
	VMOVDQU64 Z25, hi

#define ADDFIXED(lo, hi) \
	VPADDQ lo, Z24, Z24; \
	VPADDQ hi, Z25, Z25; \
	VMOVDQU64 Z24, lo; \
	VMOVDQU64 Z25, hi

// func fixedChain64(into *int64, segs *fixedSeg, sh *fixedChainShape) bool
//
// For each of sh.blocks blocks of four rows, a panel 64 columns wide
// (segs' x pointers at its first column, into at its first row and
// column): each run's chain of fused multiply-adds over its samples in
// order from +0, t = fma(dz[k, o], x[k, i], t) — the exact GEMM's bits for
// dzᵀ·x — is converted as ToFixed converts (|t| < 2^20, else it returns
// false at once: NaN and ±Inf compare as large integers), and the runs'
// integers summed into into (added to what it holds when sh.add is set).
TEXT ·fixedChain64(SB), NOSPLIT, $16-25
	MOVQ into+0(FP), DI
	MOVQ sh+16(FP), BX
	MOVL $0x7fffffff, DX // |·|
	VPBROADCASTD DX, Z28
	MOVL $0x49800000, DX // 2^20
	VPBROADCASTD DX, Z29
	MOVL $0x53800000, DX // 2^40 (float32)
	VPBROADCASTD DX, Z31
	MOVQ 0(BX), R8   // dz's row stride
	MOVQ 8(BX), R9   // x's row stride
	MOVQ 16(BX), R10 // into's row stride
	MOVQ 24(BX), AX
	MOVQ AX, blocks-8(SP)
	XORQ R14, R14    // the block's first row in dz, bytes

fixedChain64block:
	MOVQ segs+8(FP), R11
	MOVQ 32(BX), R12 // runs
	MOVQ 40(BX), R13 // 1: add to into; 0: the first run sets it

fixedChain64seg:
	MOVQ 0(R11), SI
	ADDQ R14, SI
	MOVQ 8(R11), DX
	MOVQ 16(R11), CX
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
	TESTQ CX, CX
	JZ    fixedChain64conv

fixedChain64k:
	VMOVUPS 0(DX), Z16
	VMOVUPS 64(DX), Z17
	VMOVUPS 128(DX), Z18
	VMOVUPS 192(DX), Z19
	VBROADCASTSS 0(SI), Z20
	VBROADCASTSS 4(SI), Z21
	VBROADCASTSS 8(SI), Z22
	VBROADCASTSS 12(SI), Z23
	VFMADD231PS Z16, Z20, Z0
	VFMADD231PS Z17, Z20, Z1
	VFMADD231PS Z18, Z20, Z2
	VFMADD231PS Z19, Z20, Z3
	VFMADD231PS Z16, Z21, Z4
	VFMADD231PS Z17, Z21, Z5
	VFMADD231PS Z18, Z21, Z6
	VFMADD231PS Z19, Z21, Z7
	VFMADD231PS Z16, Z22, Z8
	VFMADD231PS Z17, Z22, Z9
	VFMADD231PS Z18, Z22, Z10
	VFMADD231PS Z19, Z22, Z11
	VFMADD231PS Z16, Z23, Z12
	VFMADD231PS Z17, Z23, Z13
	VFMADD231PS Z18, Z23, Z14
	VFMADD231PS Z19, Z23, Z15
	ADDQ R8, SI
	ADDQ R9, DX
	DECQ CX
	JNZ  fixedChain64k

fixedChain64conv:
	INRANGE(Z0); JCC fixedChain64bad
	INRANGE(Z1); JCC fixedChain64bad
	INRANGE(Z2); JCC fixedChain64bad
	INRANGE(Z3); JCC fixedChain64bad
	INRANGE(Z4); JCC fixedChain64bad
	INRANGE(Z5); JCC fixedChain64bad
	INRANGE(Z6); JCC fixedChain64bad
	INRANGE(Z7); JCC fixedChain64bad
	INRANGE(Z8); JCC fixedChain64bad
	INRANGE(Z9); JCC fixedChain64bad
	INRANGE(Z10); JCC fixedChain64bad
	INRANGE(Z11); JCC fixedChain64bad
	INRANGE(Z12); JCC fixedChain64bad
	INRANGE(Z13); JCC fixedChain64bad
	INRANGE(Z14); JCC fixedChain64bad
	INRANGE(Z15); JCC fixedChain64bad
	LEAQ (DI)(R10*2), CX
	ADDQ R10, CX // row 3
	TESTQ R13, R13
	JNZ fixedChain64add
	TOFIXED(Z0, Y0); SETFIXED((DI), 64(DI))
	TOFIXED(Z1, Y1); SETFIXED(128(DI), 192(DI))
	TOFIXED(Z2, Y2); SETFIXED(256(DI), 320(DI))
	TOFIXED(Z3, Y3); SETFIXED(384(DI), 448(DI))
	TOFIXED(Z4, Y4); SETFIXED((DI)(R10*1), 64(DI)(R10*1))
	TOFIXED(Z5, Y5); SETFIXED(128(DI)(R10*1), 192(DI)(R10*1))
	TOFIXED(Z6, Y6); SETFIXED(256(DI)(R10*1), 320(DI)(R10*1))
	TOFIXED(Z7, Y7); SETFIXED(384(DI)(R10*1), 448(DI)(R10*1))
	TOFIXED(Z8, Y8); SETFIXED((DI)(R10*2), 64(DI)(R10*2))
	TOFIXED(Z9, Y9); SETFIXED(128(DI)(R10*2), 192(DI)(R10*2))
	TOFIXED(Z10, Y10); SETFIXED(256(DI)(R10*2), 320(DI)(R10*2))
	TOFIXED(Z11, Y11); SETFIXED(384(DI)(R10*2), 448(DI)(R10*2))
	TOFIXED(Z12, Y12); SETFIXED((CX), 64(CX))
	TOFIXED(Z13, Y13); SETFIXED(128(CX), 192(CX))
	TOFIXED(Z14, Y14); SETFIXED(256(CX), 320(CX))
	TOFIXED(Z15, Y15); SETFIXED(384(CX), 448(CX))
	JMP fixedChain64next

fixedChain64add:
	TOFIXED(Z0, Y0); ADDFIXED((DI), 64(DI))
	TOFIXED(Z1, Y1); ADDFIXED(128(DI), 192(DI))
	TOFIXED(Z2, Y2); ADDFIXED(256(DI), 320(DI))
	TOFIXED(Z3, Y3); ADDFIXED(384(DI), 448(DI))
	TOFIXED(Z4, Y4); ADDFIXED((DI)(R10*1), 64(DI)(R10*1))
	TOFIXED(Z5, Y5); ADDFIXED(128(DI)(R10*1), 192(DI)(R10*1))
	TOFIXED(Z6, Y6); ADDFIXED(256(DI)(R10*1), 320(DI)(R10*1))
	TOFIXED(Z7, Y7); ADDFIXED(384(DI)(R10*1), 448(DI)(R10*1))
	TOFIXED(Z8, Y8); ADDFIXED((DI)(R10*2), 64(DI)(R10*2))
	TOFIXED(Z9, Y9); ADDFIXED(128(DI)(R10*2), 192(DI)(R10*2))
	TOFIXED(Z10, Y10); ADDFIXED(256(DI)(R10*2), 320(DI)(R10*2))
	TOFIXED(Z11, Y11); ADDFIXED(384(DI)(R10*2), 448(DI)(R10*2))
	TOFIXED(Z12, Y12); ADDFIXED((CX), 64(CX))
	TOFIXED(Z13, Y13); ADDFIXED(128(CX), 192(CX))
	TOFIXED(Z14, Y14); ADDFIXED(256(CX), 320(CX))
	TOFIXED(Z15, Y15); ADDFIXED(384(CX), 448(CX))

fixedChain64next:
	MOVQ $1, R13
	ADDQ $24, R11
	DECQ R12
	JNZ  fixedChain64seg
	ADDQ $16, R14
	LEAQ (DI)(R10*4), DI
	DECQ blocks-8(SP)
	JNZ  fixedChain64block
	MOVB $1, ret+24(FP)
	VZEROUPPER
	RET

fixedChain64bad:
	MOVB $0, ret+24(FP)
	VZEROUPPER
	RET

// func fixedChain1(into *int64, segs *fixedSeg, sh *fixedChainShape) bool
//
// For each of sh.blocks blocks of four rows, a panel 16 columns wide
// (segs' x pointers at its first column, into at its first row and
// column): each run's chain of fused multiply-adds over its samples in
// order from +0, t = fma(dz[k, o], x[k, i], t) — the exact GEMM's bits for
// dzᵀ·x — is converted as ToFixed converts (|t| < 2^20, else it returns
// false at once: NaN and ±Inf compare as large integers), and the runs'
// integers summed into into (added to what it holds when sh.add is set).
TEXT ·fixedChain1(SB), NOSPLIT, $16-25
	MOVQ into+0(FP), DI
	MOVQ sh+16(FP), BX
	MOVL $0x7fffffff, DX // |·|
	VPBROADCASTD DX, Z28
	MOVL $0x49800000, DX // 2^20
	VPBROADCASTD DX, Z29
	MOVL $0x53800000, DX // 2^40 (float32)
	VPBROADCASTD DX, Z31
	MOVQ 0(BX), R8   // dz's row stride
	MOVQ 8(BX), R9   // x's row stride
	MOVQ 16(BX), R10 // into's row stride
	MOVQ 24(BX), AX
	MOVQ AX, blocks-8(SP)
	XORQ R14, R14    // the block's first row in dz, bytes

fixedChain1block:
	MOVQ segs+8(FP), R11
	MOVQ 32(BX), R12 // runs
	MOVQ 40(BX), R13 // 1: add to into; 0: the first run sets it

fixedChain1seg:
	MOVQ 0(R11), SI
	ADDQ R14, SI
	MOVQ 8(R11), DX
	MOVQ 16(R11), CX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	TESTQ CX, CX
	JZ    fixedChain1conv

fixedChain1k:
	VMOVUPS 0(DX), Z16
	VBROADCASTSS 0(SI), Z20
	VBROADCASTSS 4(SI), Z21
	VBROADCASTSS 8(SI), Z22
	VBROADCASTSS 12(SI), Z23
	VFMADD231PS Z16, Z20, Z0
	VFMADD231PS Z16, Z21, Z1
	VFMADD231PS Z16, Z22, Z2
	VFMADD231PS Z16, Z23, Z3
	ADDQ R8, SI
	ADDQ R9, DX
	DECQ CX
	JNZ  fixedChain1k

fixedChain1conv:
	INRANGE(Z0); JCC fixedChain1bad
	INRANGE(Z1); JCC fixedChain1bad
	INRANGE(Z2); JCC fixedChain1bad
	INRANGE(Z3); JCC fixedChain1bad
	LEAQ (DI)(R10*2), CX
	ADDQ R10, CX // row 3
	TESTQ R13, R13
	JNZ fixedChain1add
	TOFIXED(Z0, Y0); SETFIXED((DI), 64(DI))
	TOFIXED(Z1, Y1); SETFIXED((DI)(R10*1), 64(DI)(R10*1))
	TOFIXED(Z2, Y2); SETFIXED((DI)(R10*2), 64(DI)(R10*2))
	TOFIXED(Z3, Y3); SETFIXED((CX), 64(CX))
	JMP fixedChain1next

fixedChain1add:
	TOFIXED(Z0, Y0); ADDFIXED((DI), 64(DI))
	TOFIXED(Z1, Y1); ADDFIXED((DI)(R10*1), 64(DI)(R10*1))
	TOFIXED(Z2, Y2); ADDFIXED((DI)(R10*2), 64(DI)(R10*2))
	TOFIXED(Z3, Y3); ADDFIXED((CX), 64(CX))

fixedChain1next:
	MOVQ $1, R13
	ADDQ $24, R11
	DECQ R12
	JNZ  fixedChain1seg
	ADDQ $16, R14
	LEAQ (DI)(R10*4), DI
	DECQ blocks-8(SP)
	JNZ  fixedChain1block
	MOVB $1, ret+24(FP)
	VZEROUPPER
	RET

fixedChain1bad:
	MOVB $0, ret+24(FP)
	VZEROUPPER
	RET
