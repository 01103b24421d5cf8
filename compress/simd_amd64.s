#include "textflag.h"

// func minMax8(x *float32, n int, out *[16]float32)
//
// The running minimum and maximum of x[0:n] (n a multiple of 8) and of the
// eight lanes already in out (out[0:8] minima, out[8:16] maxima), lane by
// lane: an element replaces a lane's value only when strictly smaller (or
// larger), as MinMax's comparisons do, so NaNs are ignored and a zero of
// either sign never replaces the other.
TEXT ·minMax8(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ out+16(FP), DI
	VMOVUPS (DI), Y0
	VMOVUPS 32(DI), Y1
	SHRQ $3, CX
	JZ   done

loop:
	VMOVUPS (SI), Y2
	VMINPS  Y0, Y2, Y0 // Y0 = (x < Y0) ? x : Y0
	VMAXPS  Y1, Y2, Y1 // Y1 = (x > Y1) ? x : Y1
	ADDQ    $32, SI
	DECQ    CX
	JNZ     loop

done:
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	VZEROUPPER
	RET

// func fakeQuant8(dst, src *float32, n int, inv, sc, zf float32, out *[16]float32)
//
// For each of src[0:n] (n a multiple of 8): q = round(x·inv) + zf, with
// round kernels.RoundEven32's (x + 1.5·2^23) − 1.5·2^23 where
// −2^22 < x < 2^22 and x itself elsewhere, then dst = (q − zf)·sc; and the
// running minimum and maximum of q in out's lanes, as minMax8 keeps them.
// Every operation is one IEEE single-precision rounding, as in the Go
// loop: the same bits.
TEXT ·fakeQuant8(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS inv+24(FP), Y8
	VBROADCASTSS sc+28(FP), Y9
	VBROADCASTSS zf+32(FP), Y10
	MOVQ out+40(FP), DX
	VMOVUPS (DX), Y0
	VMOVUPS 32(DX), Y1
	MOVL $0x4b400000, AX // 1.5·2^23
	MOVQ AX, X11
	VBROADCASTSS X11, Y11
	MOVL $0x4a800000, AX // 2^22
	MOVQ AX, X12
	VBROADCASTSS X12, Y12
	MOVL $0xca800000, AX // −2^22
	MOVQ AX, X13
	VBROADCASTSS X13, Y13
	SHRQ $3, CX
	JZ   fqdone

fqloop:
	VMOVUPS (SI), Y2
	VMULPS  Y8, Y2, Y2      // x·inv
	VADDPS  Y11, Y2, Y3     // + magic
	VSUBPS  Y11, Y3, Y3     // − magic
	VCMPPS  $0x1e, Y13, Y2, Y4 // x > −2^22 (ordered)
	VCMPPS  $0x11, Y12, Y2, Y5 // x < 2^22 (ordered)
	VANDPS  Y5, Y4, Y4
	VBLENDVPS Y4, Y3, Y2, Y2 // rounded where in range, x elsewhere
	VADDPS  Y10, Y2, Y2     // q = r + zf
	VMINPS  Y0, Y2, Y0
	VMAXPS  Y1, Y2, Y1
	VSUBPS  Y10, Y2, Y2     // q − zf
	VMULPS  Y9, Y2, Y2      // · sc
	VMOVUPS Y2, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     fqloop

fqdone:
	VMOVUPS Y0, (DX)
	VMOVUPS Y1, 32(DX)
	VZEROUPPER
	RET
