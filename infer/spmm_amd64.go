package infer

import "golang.org/x/sys/cpu"

// hasFMA says whether the AVX2/FMA sparse kernel can run here.
var hasFMA = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func spmmRowFMA(vals *float32, cols *int32, nnz int, xT *float32, ldx int, y *float32, n int)

//go:noescape
func transpose8(src *float32, lds int, dst *float32, ldd int)
