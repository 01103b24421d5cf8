#include "textflag.h"

// func foldInt64s16(v *int64, blocks int) uint64
TEXT ·foldInt64s16(SB), NOSPLIT, $0-24
	MOVQ    v+0(FP), SI
	MOVQ    blocks+8(FP), CX
	VPXORQ  Z4, Z4, Z4
	VPXORQ  Z5, Z5, Z5

fold:
	VMOVDQU64 (SI), Z0
	VMOVDQU64 64(SI), Z1
	VPSRAQ    $63, Z0, Z2
	VPSRAQ    $63, Z1, Z3
	VPXORQ    Z0, Z2, Z2
	VPXORQ    Z1, Z3, Z3
	VPORQ     Z2, Z4, Z4
	VPORQ     Z3, Z5, Z5
	ADDQ      $128, SI
	DECQ      CX
	JNZ       fold

	VPORQ         Z5, Z4, Z4
	VEXTRACTI64X4 $1, Z4, Y5
	VPORQ         Y5, Y4, Y4
	VEXTRACTI128  $1, Y4, X5
	VPOR          X5, X4, X4
	VPSHUFD       $0x4e, X4, X5
	VPOR          X5, X4, X4
	MOVQ          X4, AX
	MOVQ          AX, ret+16(FP)
	VZEROUPPER
	RET

// func packInt64s8(dst *byte, v *int64, blocks, w int, idx *[64]byte)
TEXT ·packInt64s8(SB), NOSPLIT, $0-40
	MOVQ      dst+0(FP), DI
	MOVQ      v+8(FP), SI
	MOVQ      blocks+16(FP), CX
	MOVQ      w+24(FP), DX
	SHLQ      $3, DX // 8w bytes a block
	MOVQ      idx+32(FP), AX
	VMOVDQU8  (AX), Z7

pack:
	VMOVDQU64 (SI), Z0
	VPERMB    Z0, Z7, Z1
	VMOVDQU8  Z1, (DI)
	ADDQ      $64, SI
	ADDQ      DX, DI
	DECQ      CX
	JNZ       pack
	VZEROUPPER
	RET

// func unpackInt64s8(v *int64, src *byte, blocks, w int, idx *[64]byte)
TEXT ·unpackInt64s8(SB), NOSPLIT, $0-40
	MOVQ      v+0(FP), DI
	MOVQ      src+8(FP), SI
	MOVQ      blocks+16(FP), CX
	MOVQ      w+24(FP), DX
	MOVQ      $8, BX
	SUBQ      DX, BX
	SHLQ      $3, BX // 64 − 8w: the bits above each value
	MOVQ      BX, X6
	SHLQ      $3, DX // 8w bytes a block
	MOVQ      idx+32(FP), AX
	VMOVDQU8  (AX), Z7

unpack:
	VMOVDQU8  (SI), Z0
	VPERMB    Z0, Z7, Z1
	VPSLLQ    X6, Z1, Z1
	VPSRAQ    X6, Z1, Z1
	VMOVDQU64 Z1, (DI)
	ADDQ      DX, SI
	ADDQ      $64, DI
	DECQ      CX
	JNZ       unpack
	VZEROUPPER
	RET

// func copyFinite8(dst *float32, src *byte, blocks int) int
//
// Copies blocks of eight little-endian float32s from src to dst, and stops
// before the first block holding a NaN or an Inf (exponent bits all set);
// it returns the blocks copied.
TEXT ·copyFinite8(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ blocks+16(FP), CX
	XORQ AX, AX
	MOVL $0x7f800000, DX
	MOVQ DX, X1
	VPBROADCASTD X1, Y1

fcloop:
	CMPQ AX, CX
	JEQ  fcdone
	VMOVDQU  (SI), Y0
	VPAND    Y1, Y0, Y2
	VPCMPEQD Y1, Y2, Y2
	VPTEST   Y2, Y2
	JNZ      fcdone
	VMOVDQU  Y0, (DI)
	ADDQ     $32, SI
	ADDQ     $32, DI
	INCQ     AX
	JMP      fcloop

fcdone:
	VZEROUPPER
	MOVQ AX, ret+24(FP)
	RET

// ---- AVX2 forms: four values a block ----

// func foldInt64s4(v *int64, blocks int) uint64
//
// foldInt64s16 with AVX2 over v[:8·blocks]: a negative value's sign mask
// (VPCMPGTQ against zero) XORed in, as x >> 63 is.
TEXT ·foldInt64s4(SB), NOSPLIT, $0-24
	MOVQ    v+0(FP), SI
	MOVQ    blocks+8(FP), CX
	VPXOR   Y4, Y4, Y4
	VPXOR   Y5, Y5, Y5
	VPXOR   Y6, Y6, Y6 // zero

fold2:
	VMOVDQU  (SI), Y0
	VMOVDQU  32(SI), Y1
	VPCMPGTQ Y0, Y6, Y2 // 0 > x: all ones
	VPCMPGTQ Y1, Y6, Y3
	VPXOR    Y0, Y2, Y2
	VPXOR    Y1, Y3, Y3
	VPOR     Y2, Y4, Y4
	VPOR     Y3, Y5, Y5
	ADDQ     $64, SI
	DECQ     CX
	JNZ      fold2

	VPOR         Y5, Y4, Y4
	VEXTRACTI128 $1, Y4, X5
	VPOR         X5, X4, X4
	VPSHUFD      $0x4e, X4, X5
	VPOR         X5, X4, X4
	MOVQ         X4, AX
	MOVQ         AX, ret+16(FP)
	VZEROUPPER
	RET

// func packInt64s4(dst *byte, v *int64, blocks, w int, idx *[32]byte)
//
// packInt64s8 with AVX2, four values a block: VPSHUFB gathers the low w
// bytes of each 128-bit lane's two values (idx: both lanes' table), and
// the lanes are stored 2w bytes apart; it stores 16 − 2w bytes past the
// last value's.
TEXT ·packInt64s4(SB), NOSPLIT, $0-40
	MOVQ    dst+0(FP), DI
	MOVQ    v+8(FP), SI
	MOVQ    blocks+16(FP), CX
	MOVQ    w+24(FP), DX
	SHLQ    $1, DX // 2w: the high lane's place
	LEAQ    (DX)(DX*1), BX // 4w bytes a block
	MOVQ    idx+32(FP), AX
	VMOVDQU (AX), Y7

pack2:
	VMOVDQU      (SI), Y0
	VPSHUFB      Y7, Y0, Y1
	VMOVDQU      X1, (DI)
	VEXTRACTI128 $1, Y1, X2
	VMOVDQU      X2, (DI)(DX*1)
	ADDQ         $32, SI
	ADDQ         BX, DI
	DECQ         CX
	JNZ          pack2
	VZEROUPPER
	RET

// func unpackInt64s4(v *int64, src *byte, blocks, w int, idx *[32]byte)
//
// unpackInt64s8 with AVX2, four values a block: sixteen bytes at src and
// at src+2w into the two lanes, VPSHUFB puts each value's w bytes low in
// its quadword (zeros above), and (x ^ m) − m with m = 2^(8w−1) extends
// the sign; it loads 16 − 2w bytes past the last value's.
TEXT ·unpackInt64s4(SB), NOSPLIT, $0-40
	MOVQ    v+0(FP), DI
	MOVQ    src+8(FP), SI
	MOVQ    w+24(FP), DX
	MOVQ    DX, CX
	SHLQ    $3, CX
	DECQ    CX
	MOVQ    $1, R8
	SHLQ    CX, R8 // 2^(8w−1)
	MOVQ    blocks+16(FP), CX
	MOVQ    R8, X6
	VPBROADCASTQ X6, Y6
	SHLQ    $1, DX // 2w: the high lane's place
	LEAQ    (DX)(DX*1), BX // 4w bytes a block
	MOVQ    idx+32(FP), AX
	VMOVDQU (AX), Y7

unpack2:
	VMOVDQU    (SI), X0
	VINSERTI128 $1, (SI)(DX*1), Y0, Y0
	VPSHUFB    Y7, Y0, Y1
	VPXOR      Y6, Y1, Y1
	VPSUBQ     Y6, Y1, Y1
	VMOVDQU    Y1, (DI)
	ADDQ       BX, SI
	ADDQ       $32, DI
	DECQ       CX
	JNZ        unpack2
	VZEROUPPER
	RET
