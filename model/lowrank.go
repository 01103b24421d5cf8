package model

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"

	"gonum.org/v1/gonum/mat"
)

// Factorize returns a copy of m in which the linear layer name is replaced
// by two thinner ones through a truncated SVD, W ≈ U_r·S_r·V_rᵀ: name.v
// (in→r, weights √S_r·V_rᵀ, zero bias, no activation) then name.u (r→out,
// weights U_r·√S_r, the original bias and activation). The rank is rank
// when positive, otherwise the smallest keeping the fraction energy of the
// squared singular values. Every other parameter is copied. It also returns
// the rank chosen.
func (m *Model) Factorize(name string, rank int, energy float64) (*Model, int, error) {
	if m.Spec.Arch == "" {
		return nil, 0, errors.New("model: low-rank factorization rebuilds a preset architecture; this model was built from a network description (FromNetwork)")
	}
	if err := m.Net.Basic(); err != nil {
		return nil, 0, fmt.Errorf("model: low-rank factorization rebuilds chains of layers only so far: %w", err)
	}
	w := m.Param(name)
	if w == nil || w.Bias || len(w.Shape) != 2 {
		return nil, 0, fmt.Errorf("model: factorize: %q is not a linear layer of this model", name)
	}
	out, in := w.Shape[0], w.Shape[1]
	full := min(out, in)
	if rank > full {
		return nil, 0, fmt.Errorf("model: factorize: rank %d of %s exceeds min(%d, %d) = %d", rank, name, out, in, full)
	}
	if rank <= 0 && !(energy > 0 && energy <= 1) {
		return nil, 0, fmt.Errorf("model: factorize: %s needs a rank or an energy fraction in (0, 1]", name)
	}
	a := mat.NewDense(out, in, nil)
	for i, v := range w.Data() {
		a.RawMatrix().Data[i] = float64(v)
	}
	var svd mat.SVD
	if !svd.Factorize(a, mat.SVDThin) {
		return nil, 0, fmt.Errorf("model: factorize: SVD of %s did not converge", name)
	}
	sv := svd.Values(nil)
	if rank <= 0 {
		var total, acc float64
		for _, s := range sv {
			total += s * s
		}
		rank = len(sv)
		for i, s := range sv {
			acc += s * s
			if acc >= energy*total {
				rank = i + 1
				break
			}
		}
	}
	var u, v mat.Dense
	svd.UTo(&u)
	svd.VTo(&v)

	spec := m.Spec
	spec.Factors = append(slices.Clone(spec.Factors), Factor{Layer: name, Rank: rank})
	f, err := New(spec, m.Input, 0)
	if err != nil {
		return nil, 0, err
	}
	f.ClassWeights, f.LabelSmoothing = m.ClassWeights, m.LabelSmoothing
	if ctl := m.Quant[name]; ctl != nil {
		f.Quant = maps.Clone(m.Quant)
		delete(f.Quant, name)
		// The factors share the layer's control (one schedule for both).
		f.Quant[name+".v"], f.Quant[name+".u"] = ctl, ctl
	} else {
		f.Quant = m.Quant
	}
	for _, p := range m.Params {
		if p.Layer == name {
			continue
		}
		q := f.Param(p.Name)
		if q == nil || q.Size() != p.Size() {
			return nil, 0, fmt.Errorf("model: factorize: parameter %s does not carry over", p.Name)
		}
		copy(q.Data(), p.Data())
	}
	vw, uw := f.Param(name+".v").Data(), f.Param(name+".u").Data()
	for r := 0; r < rank; r++ {
		root := math.Sqrt(sv[r])
		for j := 0; j < in; j++ {
			vw[r*in+j] = float32(root * v.At(j, r))
		}
		for i := 0; i < out; i++ {
			uw[i*rank+r] = float32(root * u.At(i, r))
		}
	}
	f.ActQuant = m.ActQuant
	clear(f.Param(name + ".v.bias").Data())
	copy(f.Param(name+".u.bias").Data(), m.Param(name+".bias").Data())
	return f, rank, nil
}
