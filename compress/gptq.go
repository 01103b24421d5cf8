package compress

import (
	"errors"
	"fmt"
	"math"
	"sort"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/mat"

	"github.com/lathe-ml/lathe/model"
)

// One-shot compression from second-order information: GPTQ (Frantar et al.
// 2022) quantizes a layer's weights and SparseGPT (Frantar & Alistarh 2023)
// prunes them, column by column, each step's error spread over the columns
// not yet done so that the layer's outputs on calibration inputs X move as
// little as possible: ‖W·Xᵀ − Ŵ·Xᵀ‖² with H = XᵀX its Hessian.

// Hessian accumulates XᵀX over the calibration inputs of one weight
// (rows of its input: a linear layer's input vectors, a convolution's
// patches, in the weight's column order).
type Hessian struct {
	Cols int
	H    []float64 // [Cols, Cols], the upper triangle

	N int // rows added
}

// NewHessian makes an empty Hessian for a weight of cols columns.
func NewHessian(cols int) *Hessian {
	return &Hessian{Cols: cols, H: make([]float64, cols*cols)}
}

// Add adds input rows x [n, Cols] (in chunks, through BLAS: H's upper
// triangle is kept).
func (h *Hessian) Add(x []float32) {
	c := h.Cols
	n := len(x) / c
	const chunk = 256
	buf := make([]float64, min(n, chunk)*c)
	for r0 := 0; r0 < n; r0 += chunk {
		k := min(chunk, n-r0)
		for i, v := range x[r0*c : (r0+k)*c] {
			buf[i] = float64(v)
		}
		a := blas64.General{Rows: k, Cols: c, Stride: c, Data: buf[:k*c]}
		blas64.Syrk(blas.Trans, 1, a, 1, blas64.Symmetric{N: c, Stride: c, Uplo: blas.Upper, Data: h.H})
	}
	h.N += n
}

// at is H[i][j] from its upper triangle.
func (h *Hessian) at(i, j int) float64 {
	if i > j {
		i, j = j, i
	}
	return h.H[i*h.Cols+j]
}

// Error is ‖(W − Ŵ)·Xᵀ‖² / N, the mean squared change of the layer's
// outputs over the calibration rows, for w and its compressed ŵ [rows,
// Cols].
func (h *Hessian) Error(w, what []float32) float64 {
	c := h.Cols
	d := make([]float64, c)
	total := 0.0
	for r := 0; r < len(w)/c; r++ {
		for j := range d {
			d[j] = float64(w[r*c+j] - what[r*c+j])
		}
		for i, di := range d {
			if di == 0 {
				continue
			}
			s := 0.0
			for j, dj := range d {
				s += h.at(i, j) * dj
			}
			total += di * s
		}
	}
	return total / float64(max(h.N, 1))
}

// inverseFactor is the upper Cholesky factor U of (H + λI)⁻¹ (UᵀU), λ
// damp times the mean of H's diagonal; inputs that never vary (a zero
// diagonal) are marked dead.
func (h *Hessian) inverseFactor(damp float64) (*mat.TriDense, []bool, error) {
	c := h.Cols
	a := mat.NewSymDense(c, nil)
	dead := make([]bool, c)
	mean := 0.0
	for i := range c {
		mean += h.H[i*c+i]
	}
	mean /= float64(c)
	if mean == 0 {
		mean = 1
	}
	for i := range c {
		for j := i; j < c; j++ {
			a.SetSym(i, j, h.H[i*c+j])
		}
		if h.H[i*c+i] == 0 {
			dead[i] = true
			a.SetSym(i, i, 1)
		}
		a.SetSym(i, i, a.At(i, i)+damp*mean)
	}
	var ch mat.Cholesky
	if !ch.Factorize(a) {
		return nil, nil, errors.New("compress: the calibration Hessian is not positive definite (raise the dampening)")
	}
	var inv mat.SymDense
	if err := ch.InverseTo(&inv); err != nil {
		return nil, nil, fmt.Errorf("compress: inverting the calibration Hessian: %w", err)
	}
	var ci mat.Cholesky
	if !ci.Factorize(&inv) {
		return nil, nil, errors.New("compress: the inverse Hessian is not positive definite (raise the dampening)")
	}
	var u mat.TriDense
	ci.UTo(&u)
	return &u, dead, nil
}

// DefaultDamp is the dampening GPTQ's and SparseGPT's reference code use:
// 1 % of the Hessian's mean diagonal.
const DefaultDamp = 0.01

// GPTQ quantizes w [rows, h.Cols] (row r an output channel) to spec's
// integers, per channel when spec says so, scales from w's own range
// (as round-to-nearest uses), columns in order, each column's rounding
// error compensated on the columns after it. It returns the parameters and
// codes, which dequantize to the compensated weight.
func GPTQ(w []float32, h *Hessian, spec model.QuantSpec, damp float64) (QuantParams, []int32, error) {
	c := h.Cols
	if c == 0 || len(w)%c != 0 {
		return QuantParams{}, nil, fmt.Errorf("compress: a %d-value weight for a %d-column Hessian", len(w), c)
	}
	rows := len(w) / c
	p := ParamsFor(spec, w, rows)
	u, dead, err := h.inverseFactor(damp)
	if err != nil {
		return QuantParams{}, nil, err
	}
	wd := make([]float64, len(w))
	for i, v := range w {
		wd[i] = float64(v)
	}
	codes := make([]int32, len(w))
	ur := u.RawTriangular()
	ch := func(r int) int {
		if len(p.Scale) == 1 {
			return 0
		}
		return r
	}
	for j := range c {
		uj := ur.Data[j*ur.Stride : j*ur.Stride+c]
		d := uj[j]
		for r := range rows {
			x := wd[r*c+j]
			if dead[j] {
				x = 0
			}
			k := ch(r)
			q := roundEven32(float32(x)*(1/p.Scale[k])) + float32(p.Zero[k])
			code := int32(min(max(q, float32(p.QMin)), float32(p.QMax)))
			codes[r*c+j] = code
			e := (x - float64(float32(code-p.Zero[k])*p.Scale[k])) / d
			if e == 0 {
				continue
			}
			row := wd[r*c : (r+1)*c]
			for t := j + 1; t < c; t++ {
				row[t] -= e * uj[t]
			}
		}
	}
	return p, codes, nil
}

// SparseGPT prunes w [rows, h.Cols] in place: a share sparsity of every
// block of 128 columns (the weights whose removal costs least, w²/[H⁻¹]²
// over the block, chosen as the block starts), or, with m > 0, the m − n
// cheapest of every m consecutive weights of a row (n:m); each pruned
// column's error is compensated on the columns after it. It returns the
// mask (1: kept).
func SparseGPT(w []float32, h *Hessian, sparsity float64, n, m int, damp float64) ([]byte, error) {
	c := h.Cols
	if c == 0 || len(w)%c != 0 {
		return nil, fmt.Errorf("compress: a %d-value weight for a %d-column Hessian", len(w), c)
	}
	if m > 0 && (n < 0 || n > m) || m == 0 && (sparsity < 0 || sparsity >= 1) {
		return nil, fmt.Errorf("compress: SparseGPT at sparsity %g, %d:%d", sparsity, n, m)
	}
	rows := len(w) / c
	u, dead, err := h.inverseFactor(damp)
	if err != nil {
		return nil, err
	}
	wd := make([]float64, len(w))
	for i, v := range w {
		wd[i] = float64(v)
	}
	mask := make([]byte, len(w))
	for i := range mask {
		mask[i] = 1
	}
	ur := u.RawTriangular()
	cost := func(r, j int) float64 { d := ur.Data[j*ur.Stride+j]; return wd[r*c+j] * wd[r*c+j] / (d * d) }
	const block = 128
	for j := range c {
		switch {
		case m > 0 && j%m == 0: // the n to keep of the next m, per row
			end := min(j+m, c)
			idx := make([]int, 0, m)
			for r := range rows {
				idx = idx[:0]
				for t := j; t < end; t++ {
					idx = append(idx, t)
				}
				sort.SliceStable(idx, func(a, b int) bool { return cost(r, idx[a]) > cost(r, idx[b]) })
				for _, t := range idx[min(n, len(idx)):] {
					mask[r*c+t] = 0
				}
			}
		case m == 0 && j%block == 0: // the block's cheapest share
			end := min(j+block, c)
			type cand struct {
				i    int
				cost float64
			}
			var all []cand
			for r := range rows {
				for t := j; t < end; t++ {
					all = append(all, cand{r*c + t, cost(r, t)})
				}
			}
			sort.SliceStable(all, func(a, b int) bool { return all[a].cost < all[b].cost })
			for _, x := range all[:int(math.Round(sparsity*float64(len(all))))] {
				mask[x.i] = 0
			}
		}
		uj := ur.Data[j*ur.Stride : j*ur.Stride+c]
		d := uj[j]
		for r := range rows {
			x := wd[r*c+j]
			if mask[r*c+j] == 1 && !dead[j] {
				continue
			}
			wd[r*c+j] = 0
			e := x / d
			if e == 0 {
				continue
			}
			row := wd[r*c : (r+1)*c]
			for t := j + 1; t < c; t++ {
				row[t] -= e * uj[t]
			}
		}
	}
	for i := range w {
		w[i] = float32(wd[i])
	}
	return mask, nil
}
