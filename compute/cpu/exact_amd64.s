#include "textflag.h"

// The exact product's kernels (exact.go gives the order they keep).

// func chainTile(c, a, b *float32, s *chainShape)
//
// For each of s.blocks blocks of four rows: Z0–Z15 hold the block's four
// rows (Z0–Z3 row 0, …) of four sixteen-lane column vectors; per k, B's
// row is loaded under the column masks (zeros past the shape), each row's
// A value broadcast, and t = fma(a, b, t); then the rows are stored and A
// and C move on four rows.
TEXT ·chainTile(SB), NOSPLIT, $8-32
	MOVQ c+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ s+24(FP), BX
	MOVQ 8(BX), R8   // A's row 1
	MOVQ 16(BX), R9  // row 2
	MOVQ 24(BX), R10 // row 3
	MOVQ 32(BX), R11 // A's step in k
	MOVQ 40(BX), R12 // B's row stride
	MOVQ 0(BX), R13  // C's row stride
	MOVQ 56(BX), R14 // rows to store
	MOVQ 64(BX), AX  // lane masks
	KMOVW AX, K1
	SHRQ $16, AX
	KMOVW AX, K2
	SHRQ $16, AX
	KMOVW AX, K3
	SHRQ $16, AX
	KMOVW AX, K4
	MOVQ 72(BX), AX  // blocks

chainblock:
	MOVQ SI, ablock-8(SP)
	MOVQ b+16(FP), DX
	MOVQ 48(BX), CX  // k
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

chainloop:
	VMOVUPS.Z (DX), K1, Z16
	VMOVUPS.Z 64(DX), K2, Z17
	VMOVUPS.Z 128(DX), K3, Z18
	VMOVUPS.Z 192(DX), K4, Z19
	VBROADCASTSS (SI), Z20
	VBROADCASTSS (SI)(R8*1), Z21
	VBROADCASTSS (SI)(R9*1), Z22
	VBROADCASTSS (SI)(R10*1), Z23
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
	ADDQ R11, SI
	ADDQ R12, DX
	DECQ CX
	JNZ  chainloop

	VMOVUPS Z0, K1, 0(DI)
	VMOVUPS Z1, K2, 64(DI)
	VMOVUPS Z2, K3, 128(DI)
	VMOVUPS Z3, K4, 192(DI)
	CMPQ R14, $2
	JLT  chaindone
	ADDQ R13, DI
	VMOVUPS Z4, K1, 0(DI)
	VMOVUPS Z5, K2, 64(DI)
	VMOVUPS Z6, K3, 128(DI)
	VMOVUPS Z7, K4, 192(DI)
	CMPQ R14, $3
	JLT  chaindone
	ADDQ R13, DI
	VMOVUPS Z8, K1, 0(DI)
	VMOVUPS Z9, K2, 64(DI)
	VMOVUPS Z10, K3, 128(DI)
	VMOVUPS Z11, K4, 192(DI)
	CMPQ R14, $4
	JLT  chaindone
	ADDQ R13, DI
	VMOVUPS Z12, K1, 0(DI)
	VMOVUPS Z13, K2, 64(DI)
	VMOVUPS Z14, K3, 128(DI)
	VMOVUPS Z15, K4, 192(DI)
	ADDQ R13, DI
	MOVQ ablock-8(SP), SI
	ADDQ 80(BX), SI  // A's next four rows
	DECQ AX
	JNZ  chainblock

chaindone:
	VZEROUPPER
	RET

// SUM16 leaves in lane 0 of X(reg) the tree sum of Z(reg)'s sixteen lanes:
// l + l+8, then l + l+4, l + l+2, l + l+1.
#define SUM16(z, y, x) \
	VEXTRACTF64X4 $1, z, Y16; \
	VADDPS        Y16, y, y; \
	VEXTRACTF32X4 $1, y, X16; \
	VADDPS        X16, x, x; \
	VMOVHLPS      x, x, X16; \
	VADDPS        X16, x, x; \
	VMOVSHDUP     x, X16; \
	VADDSS        X16, x, x

// func dotTile(out *[16]float32, a, b *float32, s *dotShape)
//
// Z(4r+c) holds the sixteen lane chains of A's row r against B's row c;
// per sixteen k, four rows of each are loaded and t = fma(a, b, t) lane by
// lane; the last, partial block is loaded under the tail mask (zeros, which
// leave a chain as it is).
TEXT ·dotTile(SB), NOSPLIT, $0-32
	MOVQ out+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ s+24(FP), BX
	MOVQ 0(BX), R8   // A's row 1
	MOVQ 8(BX), R9   // row 2
	MOVQ 16(BX), R10 // row 3
	MOVQ 24(BX), R11 // B's row 1
	MOVQ 32(BX), R12 // row 2
	MOVQ 40(BX), R13 // row 3
	MOVQ 48(BX), CX  // full blocks
	MOVQ 56(BX), AX  // the last block's lanes
	KMOVW AX, K1
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
	JZ    dottail

dotloop:
	VMOVUPS (SI), Z16
	VMOVUPS (SI)(R8*1), Z17
	VMOVUPS (SI)(R9*1), Z18
	VMOVUPS (SI)(R10*1), Z19
	VMOVUPS (DX), Z20
	VMOVUPS (DX)(R11*1), Z21
	VMOVUPS (DX)(R12*1), Z22
	VMOVUPS (DX)(R13*1), Z23
	VFMADD231PS Z20, Z16, Z0
	VFMADD231PS Z21, Z16, Z1
	VFMADD231PS Z22, Z16, Z2
	VFMADD231PS Z23, Z16, Z3
	VFMADD231PS Z20, Z17, Z4
	VFMADD231PS Z21, Z17, Z5
	VFMADD231PS Z22, Z17, Z6
	VFMADD231PS Z23, Z17, Z7
	VFMADD231PS Z20, Z18, Z8
	VFMADD231PS Z21, Z18, Z9
	VFMADD231PS Z22, Z18, Z10
	VFMADD231PS Z23, Z18, Z11
	VFMADD231PS Z20, Z19, Z12
	VFMADD231PS Z21, Z19, Z13
	VFMADD231PS Z22, Z19, Z14
	VFMADD231PS Z23, Z19, Z15
	ADDQ $64, SI
	ADDQ $64, DX
	DECQ CX
	JNZ  dotloop

dottail:
	TESTQ AX, AX
	JZ    dotsum
	VMOVUPS.Z (SI), K1, Z16
	VMOVUPS.Z (SI)(R8*1), K1, Z17
	VMOVUPS.Z (SI)(R9*1), K1, Z18
	VMOVUPS.Z (SI)(R10*1), K1, Z19
	VMOVUPS.Z (DX), K1, Z20
	VMOVUPS.Z (DX)(R11*1), K1, Z21
	VMOVUPS.Z (DX)(R12*1), K1, Z22
	VMOVUPS.Z (DX)(R13*1), K1, Z23
	VFMADD231PS Z20, Z16, Z0
	VFMADD231PS Z21, Z16, Z1
	VFMADD231PS Z22, Z16, Z2
	VFMADD231PS Z23, Z16, Z3
	VFMADD231PS Z20, Z17, Z4
	VFMADD231PS Z21, Z17, Z5
	VFMADD231PS Z22, Z17, Z6
	VFMADD231PS Z23, Z17, Z7
	VFMADD231PS Z20, Z18, Z8
	VFMADD231PS Z21, Z18, Z9
	VFMADD231PS Z22, Z18, Z10
	VFMADD231PS Z23, Z18, Z11
	VFMADD231PS Z20, Z19, Z12
	VFMADD231PS Z21, Z19, Z13
	VFMADD231PS Z22, Z19, Z14
	VFMADD231PS Z23, Z19, Z15

dotsum:
	SUM16(Z0, Y0, X0)
	VMOVSS X0, 0(DI)
	SUM16(Z1, Y1, X1)
	VMOVSS X1, 4(DI)
	SUM16(Z2, Y2, X2)
	VMOVSS X2, 8(DI)
	SUM16(Z3, Y3, X3)
	VMOVSS X3, 12(DI)
	SUM16(Z4, Y4, X4)
	VMOVSS X4, 16(DI)
	SUM16(Z5, Y5, X5)
	VMOVSS X5, 20(DI)
	SUM16(Z6, Y6, X6)
	VMOVSS X6, 24(DI)
	SUM16(Z7, Y7, X7)
	VMOVSS X7, 28(DI)
	SUM16(Z8, Y8, X8)
	VMOVSS X8, 32(DI)
	SUM16(Z9, Y9, X9)
	VMOVSS X9, 36(DI)
	SUM16(Z10, Y10, X10)
	VMOVSS X10, 40(DI)
	SUM16(Z11, Y11, X11)
	VMOVSS X11, 44(DI)
	SUM16(Z12, Y12, X12)
	VMOVSS X12, 48(DI)
	SUM16(Z13, Y13, X13)
	VMOVSS X13, 52(DI)
	SUM16(Z14, Y14, X14)
	VMOVSS X14, 56(DI)
	SUM16(Z15, Y15, X15)
	VMOVSS X15, 60(DI)
	VZEROUPPER
	RET

// ---- AVX2 forms (generated): the same chains, eight lanes a register ----

// C2CHAINS is one k of chainTile2's chains, B's row in Y8 and Y9: each
// row's A value broadcast and fused into its two vectors; then A, B and
// the count move on.
#define C2CHAINS \
	VBROADCASTSS (SI), Y10; \
	VFMADD231PS Y8, Y10, Y0; \
	VFMADD231PS Y9, Y10, Y1; \
	VBROADCASTSS (SI)(R8*1), Y10; \
	VFMADD231PS Y8, Y10, Y2; \
	VFMADD231PS Y9, Y10, Y3; \
	VBROADCASTSS (SI)(R9*1), Y10; \
	VFMADD231PS Y8, Y10, Y4; \
	VFMADD231PS Y9, Y10, Y5; \
	VBROADCASTSS (SI)(R10*1), Y10; \
	VFMADD231PS Y8, Y10, Y6; \
	VFMADD231PS Y9, Y10, Y7; \
	ADDQ R11, SI; \
	ADDQ R12, DX; \
	DECQ CX

// func chainTile2(c, a, b *float32, s *chainShape, masks *[16]int32)
//
// chainTile with AVX2 over a panel of sixteen columns: Y0–Y7 hold the
// block's four rows of two eight-lane vectors; B's row is loaded, and C's
// rows stored, under masks' two halves (all ones on the panel's columns,
// zeros past them) — or, for a full panel (s.full), with plain loads and
// stores, the same values: masked moves are slow on some processors (AMD
// Zen: 23 ms against 8.7 for a 64×1200×1200 product).
TEXT ·chainTile2(SB), NOSPLIT, $8-40
	MOVQ c+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ s+24(FP), BX
	MOVQ masks+32(FP), AX
	VMOVDQU (AX), Y14
	VMOVDQU 32(AX), Y15
	MOVQ 8(BX), R8   // A's row 1
	MOVQ 16(BX), R9  // row 2
	MOVQ 24(BX), R10 // row 3
	MOVQ 32(BX), R11 // A's step in k
	MOVQ 40(BX), R12 // B's row stride
	MOVQ 0(BX), R13  // C's row stride
	MOVQ 56(BX), R14 // rows to store
	MOVQ 72(BX), AX  // blocks

c2block:
	MOVQ SI, ablock-8(SP)
	MOVQ b+16(FP), DX
	MOVQ 48(BX), CX  // k
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7

	CMPQ 88(BX), $0 // a full panel: plain loads and stores
	JNE  c2fullloop

c2loop:
	VMASKMOVPS (DX), Y14, Y8
	VMASKMOVPS 32(DX), Y15, Y9
	C2CHAINS
	JNZ  c2loop
	JMP  c2store

c2fullloop:
	VMOVUPS (DX), Y8
	VMOVUPS 32(DX), Y9
	C2CHAINS
	JNZ  c2fullloop
	JMP  c2fullstore

c2store:
	VMASKMOVPS Y0, Y14, (DI)
	VMASKMOVPS Y1, Y15, 32(DI)
	CMPQ R14, $2
	JLT  c2done
	ADDQ R13, DI
	VMASKMOVPS Y2, Y14, (DI)
	VMASKMOVPS Y3, Y15, 32(DI)
	CMPQ R14, $3
	JLT  c2done
	ADDQ R13, DI
	VMASKMOVPS Y4, Y14, (DI)
	VMASKMOVPS Y5, Y15, 32(DI)
	CMPQ R14, $4
	JLT  c2done
	ADDQ R13, DI
	VMASKMOVPS Y6, Y14, (DI)
	VMASKMOVPS Y7, Y15, 32(DI)
	ADDQ R13, DI
	MOVQ ablock-8(SP), SI
	ADDQ 80(BX), SI  // A's next four rows
	DECQ AX
	JNZ  c2block
	JMP  c2done

c2fullstore:
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	CMPQ R14, $2
	JLT  c2done
	ADDQ R13, DI
	VMOVUPS Y2, (DI)
	VMOVUPS Y3, 32(DI)
	CMPQ R14, $3
	JLT  c2done
	ADDQ R13, DI
	VMOVUPS Y4, (DI)
	VMOVUPS Y5, 32(DI)
	CMPQ R14, $4
	JLT  c2done
	ADDQ R13, DI
	VMOVUPS Y6, (DI)
	VMOVUPS Y7, 32(DI)
	ADDQ R13, DI
	MOVQ ablock-8(SP), SI
	ADDQ 80(BX), SI  // A's next four rows
	DECQ AX
	JNZ  c2block

c2done:
	VZEROUPPER
	RET

// SUM8x2 leaves in lane 0 of X(lo) the tree sum of sixteen lanes held as
// Y(lo) (lanes 0–7) and Y(hi) (8–15): l + l+8, l + l+4, l + l+2, l + l+1.
#define SUM8x2(ylo, yhi, xlo) \
	VADDPS       yhi, ylo, ylo; \
	VEXTRACTF128 $1, ylo, X15; \
	VADDPS       X15, xlo, xlo; \
	VMOVHLPS     xlo, xlo, X15; \
	VADDPS       X15, xlo, xlo; \
	VMOVSHDUP    xlo, X15; \
	VADDSS       X15, xlo, xlo

// func dotTile2(out *[4]float32, a, b *float32, s *dotShape, tail *[16]int32)
//
// dotTile with AVX2 for two rows of A against two rows of B: Y(4r+2c)
// and Y(4r+2c+1) hold the sixteen lane chains of A's row r against B's
// row c; the last, partial block is loaded under tail's two halves.
TEXT ·dotTile2(SB), NOSPLIT, $0-40
	MOVQ out+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ s+24(FP), BX
	MOVQ 0(BX), R8   // A's row 1
	MOVQ 24(BX), R11 // B's row 1
	MOVQ 48(BX), CX  // full blocks
	MOVQ 56(BX), AX  // the last block's lanes (0: none)
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	TESTQ CX, CX
	JZ    d2tail

d2loop:
	VMOVUPS (SI), Y8
	VMOVUPS 32(SI), Y9
	VMOVUPS (SI)(R8*1), Y10
	VMOVUPS 32(SI)(R8*1), Y11
	VMOVUPS (DX), Y12
	VFMADD231PS Y12, Y8, Y0
	VFMADD231PS Y12, Y10, Y4
	VMOVUPS 32(DX), Y12
	VFMADD231PS Y12, Y9, Y1
	VFMADD231PS Y12, Y11, Y5
	VMOVUPS (DX)(R11*1), Y12
	VFMADD231PS Y12, Y8, Y2
	VFMADD231PS Y12, Y10, Y6
	VMOVUPS 32(DX)(R11*1), Y12
	VFMADD231PS Y12, Y9, Y3
	VFMADD231PS Y12, Y11, Y7
	ADDQ $64, SI
	ADDQ $64, DX
	DECQ CX
	JNZ  d2loop

d2tail:
	TESTQ AX, AX
	JZ    d2sum
	MOVQ tail+32(FP), AX
	VMOVDQU (AX), Y13
	VMOVDQU 32(AX), Y14
	VMASKMOVPS (SI), Y13, Y8
	VMASKMOVPS 32(SI), Y14, Y9
	VMASKMOVPS (SI)(R8*1), Y13, Y10
	VMASKMOVPS 32(SI)(R8*1), Y14, Y11
	VMASKMOVPS (DX), Y13, Y12
	VFMADD231PS Y12, Y8, Y0
	VFMADD231PS Y12, Y10, Y4
	VMASKMOVPS 32(DX), Y14, Y12
	VFMADD231PS Y12, Y9, Y1
	VFMADD231PS Y12, Y11, Y5
	VMASKMOVPS (DX)(R11*1), Y13, Y12
	VFMADD231PS Y12, Y8, Y2
	VFMADD231PS Y12, Y10, Y6
	VMASKMOVPS 32(DX)(R11*1), Y14, Y12
	VFMADD231PS Y12, Y9, Y3
	VFMADD231PS Y12, Y11, Y7

d2sum:
	SUM8x2(Y0, Y1, X0)
	VMOVSS X0, 0(DI)
	SUM8x2(Y2, Y3, X2)
	VMOVSS X2, 4(DI)
	SUM8x2(Y4, Y5, X4)
	VMOVSS X4, 8(DI)
	SUM8x2(Y6, Y7, X6)
	VMOVSS X6, 12(DI)
	VZEROUPPER
	RET
