package model

import (
	"fmt"

	"github.com/lathe-ml/lathe/internal/kernels"
)

// QuantSpec says how a tensor is quantized.
type QuantSpec struct {
	Bits       int  // 2 to 8
	Symmetric  bool // signed integers in [−(2^(b−1)−1), 2^(b−1)−1], zero point 0
	PerChannel bool // one scale (and zero point) per output channel: the first dimension
}

// Validate reports a spec lathe cannot quantize to.
func (s QuantSpec) Validate() error {
	if s.Bits < 2 || s.Bits > 8 {
		return fmt.Errorf("model: %d-bit quantization; bits must be 2 to 8", s.Bits)
	}
	return nil
}

// Range is the integer range of the spec: symmetric specs use the signed
// range without its most negative value (so that it is symmetric); others
// the unsigned range [0, 2^b − 1] with an integer zero point.
func (s QuantSpec) Range() (qmin, qmax int32) { return kernels.Range(s.Bits, s.Symmetric) }

// QuantControl is a quantized weight's live settings, shared by every graph
// that fake-quantizes it (training and evaluation) and changed by the
// quantization schedule: the bit width and whether quantization is on yet.
// The model holds them (Model.Quant); compress/ computes with them.
type QuantControl struct {
	Spec    QuantSpec
	Enabled bool
}

// Observer tracks an activation's range for quantization: an exponential
// moving average of each training batch's minimum and maximum (the first
// batch sets them), until it is frozen. Its fields are training state
// (compress.Observe updates it).
type Observer struct {
	Spec        QuantSpec // per tensor
	Momentum    float32   // weight of the old range, e.g. 0.9
	Min, Max    float32
	Initialized bool
	Enabled     bool // quantization is on
	Frozen      bool // the range no longer moves

	// Hold makes an update record the batch's range in Seen instead of
	// folding it in (data-parallel training folds the range of the whole
	// batch once, after its micro-shards are reduced); an observer not yet
	// initialized quantizes with the held batch's own range meanwhile.
	Hold             bool    `json:"-"`
	Seen             bool    `json:"-"`
	SeenMin, SeenMax float32 `json:"-"`
}

// Fold folds one batch's range into the observer's.
func (o *Observer) Fold(lo, hi float32) {
	if !o.Initialized {
		o.Min, o.Max, o.Initialized = lo, hi, true
		return
	}
	m := o.Momentum
	o.Min = m*o.Min + (1-m)*lo
	o.Max = m*o.Max + (1-m)*hi
}
