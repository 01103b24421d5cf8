#include "textflag.h"

// The batch norm's passes over NHWC activations, vectorized across
// channels: each channel's sums still run in position order, in float64,
// with a separate multiply and add (no fused multiply-add), so every bit
// equals the Go loops' (AVX-512F).

// func bnSums(x *float32, stride, n, w int, sum, ss *float64)
//
// For k < w (a multiple of 8) and p < n in order:
// sum[k] += float64(x[p·stride+k]); ss[k] += float64(x[…])·float64(x[…]).
// Blocks of 32 channels (eight chains) while they last, then of 8.
TEXT ·bnSums(SB), NOSPLIT, $0-48
	MOVQ x+0(FP), SI
	MOVQ stride+8(FP), R8
	SHLQ $2, R8
	MOVQ n+16(FP), R9
	MOVQ w+24(FP), R10
	MOVQ sum+32(FP), DI
	MOVQ ss+40(FP), DX

wide:
	CMPQ R10, $32
	JLT narrow
	VMOVUPD (DI), Z0
	VMOVUPD 64(DI), Z1
	VMOVUPD 128(DI), Z2
	VMOVUPD 192(DI), Z3
	VMOVUPD (DX), Z4
	VMOVUPD 64(DX), Z5
	VMOVUPD 128(DX), Z6
	VMOVUPD 192(DX), Z7
	MOVQ SI, AX
	MOVQ R9, CX
	TESTQ CX, CX
	JZ widestore

wideloop:
	VCVTPS2PD (AX), Z8
	VCVTPS2PD 32(AX), Z9
	VCVTPS2PD 64(AX), Z10
	VCVTPS2PD 96(AX), Z11
	VADDPD Z8, Z0, Z0
	VADDPD Z9, Z1, Z1
	VADDPD Z10, Z2, Z2
	VADDPD Z11, Z3, Z3
	VMULPD Z8, Z8, Z8
	VMULPD Z9, Z9, Z9
	VMULPD Z10, Z10, Z10
	VMULPD Z11, Z11, Z11
	VADDPD Z8, Z4, Z4
	VADDPD Z9, Z5, Z5
	VADDPD Z10, Z6, Z6
	VADDPD Z11, Z7, Z7
	ADDQ R8, AX
	DECQ CX
	JNZ wideloop

widestore:
	VMOVUPD Z0, (DI)
	VMOVUPD Z1, 64(DI)
	VMOVUPD Z2, 128(DI)
	VMOVUPD Z3, 192(DI)
	VMOVUPD Z4, (DX)
	VMOVUPD Z5, 64(DX)
	VMOVUPD Z6, 128(DX)
	VMOVUPD Z7, 192(DX)
	ADDQ $128, SI
	ADDQ $256, DI
	ADDQ $256, DX
	SUBQ $32, R10
	JMP wide

narrow:
	CMPQ R10, $8
	JLT done
	VMOVUPD (DI), Z0
	VMOVUPD (DX), Z4
	MOVQ SI, AX
	MOVQ R9, CX
	TESTQ CX, CX
	JZ narrowstore

narrowloop:
	VCVTPS2PD (AX), Z8
	VADDPD Z8, Z0, Z0
	VMULPD Z8, Z8, Z8
	VADDPD Z8, Z4, Z4
	ADDQ R8, AX
	DECQ CX
	JNZ narrowloop

narrowstore:
	VMOVUPD Z0, (DI)
	VMOVUPD Z4, (DX)
	ADDQ $32, SI
	ADDQ $64, DI
	ADDQ $64, DX
	SUBQ $8, R10
	JMP narrow

done:
	VZEROUPPER
	RET

// ACT(z, t) applies the act argument (in R12; Z30 holds 6.0) to z, with t
// as scratch: ReLU clears negative values by their sign bit (x &^ (x>>31),
// as the Go relu does), ReLU6 then takes min(6, x), NaN kept.
#define ACT(z, t, next) CMPQ R12, $0; JEQ next; VPSRAD $31, z, t; VPANDND z, t, z; CMPQ R12, $2; JNE next; VMINPS z, Z30, z

// func bnNorm(x, xhat, y *float32, rows, c int, mu, inv, gam, bet *float32, act int)
//
// For each of rows rows of c channels (a multiple of 8):
// h = (x − mu)·inv; xhat = h (unless xhat is nil); y = act(h·gam + bet), in float32.
TEXT ·bnNorm(SB), NOSPLIT, $0-80
	MOVQ x+0(FP), SI
	MOVQ xhat+8(FP), DI
	MOVQ y+16(FP), DX
	MOVQ rows+24(FP), R9
	MOVQ c+32(FP), R10
	MOVQ act+72(FP), R12
	MOVL $0x40c00000, AX
	VPBROADCASTD AX, Z30
	TESTQ R9, R9
	JZ normdone

row:
	MOVQ mu+40(FP), R13
	MOVQ inv+48(FP), R14
	MOVQ gam+56(FP), R15
	MOVQ bet+64(FP), BX
	MOVQ R10, CX

cols16:
	CMPQ CX, $16
	JLT cols8
	VMOVUPS (SI), Z0
	VSUBPS (R13), Z0, Z0
	VMULPS (R14), Z0, Z0
	TESTQ DI, DI
	JZ noh16
	VMOVUPS Z0, (DI)
	ADDQ $64, DI
noh16:
	VMULPS (R15), Z0, Z0
	VADDPS (BX), Z0, Z0
	ACT(Z0, Z1, act16)
act16:
	VMOVUPS Z0, (DX)
	ADDQ $64, SI
	ADDQ $64, DX
	ADDQ $64, R13
	ADDQ $64, R14
	ADDQ $64, R15
	ADDQ $64, BX
	SUBQ $16, CX
	JMP cols16

cols8:
	CMPQ CX, $8
	JLT nextrow
	VMOVUPS (SI), Y0
	VSUBPS (R13), Y0, Y0
	VMULPS (R14), Y0, Y0
	TESTQ DI, DI
	JZ noh8
	VMOVUPS Y0, (DI)
	ADDQ $32, DI
noh8:
	VMULPS (R15), Y0, Y0
	VADDPS (BX), Y0, Y0
	ACT(Z0, Z1, act8)
act8:
	VMOVUPS Y0, (DX)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, R13
	ADDQ $32, R14
	ADDQ $32, R15
	ADDQ $32, BX
	SUBQ $8, CX
	JMP cols8

nextrow:
	DECQ R9
	JNZ row

normdone:
	VZEROUPPER
	RET

// func bnGradApply(dz, x, dx *float32, rows, c int, n float64, kk, sb, sg *float64, mu, inv *float32)
//
// For each of rows rows of c channels (a multiple of 8): x̂ = (x − mu)·inv in
// float32, then in float64 dx = float32(kk·((n·dz − sb) − x̂·sg)).
TEXT ·bnGradApply(SB), NOSPLIT, $0-88
	MOVQ dz+0(FP), SI
	MOVQ x+8(FP), BX
	MOVQ dx+16(FP), DX
	MOVQ rows+24(FP), R9
	MOVQ c+32(FP), R10
	VBROADCASTSD n+40(FP), Z31
	TESTQ R9, R9
	JZ graddone

grow:
	MOVQ kk+48(FP), R13
	MOVQ sb+56(FP), R14
	MOVQ sg+64(FP), R15
	MOVQ mu+72(FP), R11
	MOVQ inv+80(FP), R12
	MOVQ R10, CX

gcols:
	CMPQ CX, $8
	JLT gnext
	VCVTPS2PD (SI), Z0
	VMULPD Z0, Z31, Z0
	VSUBPD (R14), Z0, Z0
	VMOVUPS (BX), Y1
	VSUBPS (R11), Y1, Y1
	VMULPS (R12), Y1, Y1
	VCVTPS2PD Y1, Z1
	VMULPD (R15), Z1, Z1
	VSUBPD Z1, Z0, Z0
	VMULPD (R13), Z0, Z0
	VCVTPD2PS Z0, Y2
	VMOVUPS Y2, (DX)
	ADDQ $32, SI
	ADDQ $32, BX
	ADDQ $32, DX
	ADDQ $64, R13
	ADDQ $64, R14
	ADDQ $64, R15
	ADDQ $32, R11
	ADDQ $32, R12
	SUBQ $8, CX
	JMP gcols

gnext:
	DECQ R9
	JNZ grow

graddone:
	VZEROUPPER
	RET

// func bnGradSums(dz, x *float32, stride, n, w int, mu, inv *float32, sb, sg *float64)
//
// For k < w (a multiple of 8) and p < n in order, with x̂ = (x − mu[k])·inv[k]
// in float32: sb[k] += float64(dz); sg[k] += float64(dz)·float64(x̂).
TEXT ·bnGradSums(SB), NOSPLIT, $0-72
	MOVQ dz+0(FP), SI
	MOVQ x+8(FP), BX
	MOVQ stride+16(FP), R8
	SHLQ $2, R8
	MOVQ n+24(FP), R9
	MOVQ w+32(FP), R10
	MOVQ mu+40(FP), R12
	MOVQ inv+48(FP), R13
	MOVQ sb+56(FP), DI
	MOVQ sg+64(FP), DX

gwide:
	CMPQ R10, $32
	JLT gnarrow
	VMOVUPD (DI), Z0
	VMOVUPD 64(DI), Z1
	VMOVUPD 128(DI), Z2
	VMOVUPD 192(DI), Z3
	VMOVUPD (DX), Z4
	VMOVUPD 64(DX), Z5
	VMOVUPD 128(DX), Z6
	VMOVUPD 192(DX), Z7
	VMOVUPS (R12), Y16
	VMOVUPS 32(R12), Y17
	VMOVUPS 64(R12), Y18
	VMOVUPS 96(R12), Y19
	VMOVUPS (R13), Y20
	VMOVUPS 32(R13), Y21
	VMOVUPS 64(R13), Y22
	VMOVUPS 96(R13), Y23
	MOVQ SI, AX
	MOVQ BX, R11
	MOVQ R9, CX
	TESTQ CX, CX
	JZ gwidestore

gwideloop:
	VMOVUPS (R11), Y12
	VMOVUPS 32(R11), Y13
	VMOVUPS 64(R11), Y14
	VMOVUPS 96(R11), Y15
	VSUBPS Y16, Y12, Y12
	VSUBPS Y17, Y13, Y13
	VSUBPS Y18, Y14, Y14
	VSUBPS Y19, Y15, Y15
	VMULPS Y20, Y12, Y12
	VMULPS Y21, Y13, Y13
	VMULPS Y22, Y14, Y14
	VMULPS Y23, Y15, Y15
	VCVTPS2PD Y12, Z12
	VCVTPS2PD Y13, Z13
	VCVTPS2PD Y14, Z14
	VCVTPS2PD Y15, Z15
	VCVTPS2PD (AX), Z8
	VCVTPS2PD 32(AX), Z9
	VCVTPS2PD 64(AX), Z10
	VCVTPS2PD 96(AX), Z11
	VADDPD Z8, Z0, Z0
	VADDPD Z9, Z1, Z1
	VADDPD Z10, Z2, Z2
	VADDPD Z11, Z3, Z3
	VMULPD Z12, Z8, Z8
	VMULPD Z13, Z9, Z9
	VMULPD Z14, Z10, Z10
	VMULPD Z15, Z11, Z11
	VADDPD Z8, Z4, Z4
	VADDPD Z9, Z5, Z5
	VADDPD Z10, Z6, Z6
	VADDPD Z11, Z7, Z7
	ADDQ R8, AX
	ADDQ R8, R11
	DECQ CX
	JNZ gwideloop

gwidestore:
	VMOVUPD Z0, (DI)
	VMOVUPD Z1, 64(DI)
	VMOVUPD Z2, 128(DI)
	VMOVUPD Z3, 192(DI)
	VMOVUPD Z4, (DX)
	VMOVUPD Z5, 64(DX)
	VMOVUPD Z6, 128(DX)
	VMOVUPD Z7, 192(DX)
	ADDQ $128, SI
	ADDQ $128, BX
	ADDQ $128, R12
	ADDQ $128, R13
	ADDQ $256, DI
	ADDQ $256, DX
	SUBQ $32, R10
	JMP gwide

gnarrow:
	CMPQ R10, $8
	JLT gsdone
	VMOVUPD (DI), Z0
	VMOVUPD (DX), Z4
	VMOVUPS (R12), Y16
	VMOVUPS (R13), Y20
	MOVQ SI, AX
	MOVQ BX, R11
	MOVQ R9, CX
	TESTQ CX, CX
	JZ gnarrowstore

gnarrowloop:
	VMOVUPS (R11), Y12
	VSUBPS Y16, Y12, Y12
	VMULPS Y20, Y12, Y12
	VCVTPS2PD Y12, Z12
	VCVTPS2PD (AX), Z8
	VADDPD Z8, Z0, Z0
	VMULPD Z12, Z8, Z8
	VADDPD Z8, Z4, Z4
	ADDQ R8, AX
	ADDQ R8, R11
	DECQ CX
	JNZ gnarrowloop

gnarrowstore:
	VMOVUPD Z0, (DI)
	VMOVUPD Z4, (DX)
	ADDQ $32, SI
	ADDQ $32, BX
	ADDQ $32, R12
	ADDQ $32, R13
	ADDQ $64, DI
	ADDQ $64, DX
	SUBQ $8, R10
	JMP gnarrow

gsdone:
	VZEROUPPER
	RET

// func actGradMask(y, dy, dz *float32, n int, hi float32)
//
// dz = dy where 0 < y < hi, else +0 (NaN y: +0), for n a multiple of 16:
// two ordered compares into masks, then a zero-masked move.
TEXT ·actGradMask(SB), NOSPLIT, $0-36
	MOVQ y+0(FP), SI
	MOVQ dy+8(FP), BX
	MOVQ dz+16(FP), DI
	MOVQ n+24(FP), CX
	VBROADCASTSS hi+32(FP), Z2
	VXORPS Z1, Z1, Z1
	SHRQ $4, CX
	JZ agdone

agloop:
	VMOVUPS (SI), Z0
	VCMPPS $0x1e, Z1, Z0, K1 // y > 0, ordered
	VCMPPS $0x11, Z2, Z0, K2 // y < hi, ordered
	KANDW K1, K2, K3
	VMOVUPS.Z (BX), K3, Z3
	VMOVUPS Z3, (DI)
	ADDQ $64, SI
	ADDQ $64, BX
	ADDQ $64, DI
	DECQ CX
	JNZ agloop

agdone:
	VZEROUPPER
	RET
