package trainer

import (
	"errors"
	"fmt"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/distill"
	"github.com/lathe-ml/lathe/model"
)

// splitParams returns a model's weights and biases, weight layer by
// weight layer, and for each parameter in Model.Params order which list
// and index it is.
func splitParams(m *model.Model) (w, b [][]float32, where [][2]int) {
	for _, p := range m.Params {
		if p.Bias {
			where = append(where, [2]int{1, len(b)})
			b = append(b, p.Data())
		} else {
			where = append(where, [2]int{0, len(w)})
			w = append(w, p.Data())
		}
	}
	return w, b, where
}

// SetWeightsFrom uploads a model's weights and biases; the model has the
// network's architecture (DeviceLayersOf).
func (m *DeviceNet) SetWeightsFrom(mod *model.Model) error {
	w, b, _ := splitParams(mod)
	return m.SetWeights(w, b)
}

// WeightsInto downloads the network's weights and biases into a model of
// its architecture.
func (m *DeviceNet) WeightsInto(mod *model.Model) error {
	w, b, _ := splitParams(mod)
	if len(w) != len(m.w) || len(b) != len(m.b) {
		return fmt.Errorf("trainer: a model of %d weights for a network of %d", len(w), len(m.w))
	}
	for p := range m.w {
		if len(w[p]) != m.wRows[p]*m.wCols[p] || len(b[p]) != m.wRows[p] {
			return fmt.Errorf("trainer: weight layer %d: the model's %d×? does not fit %d×%d", p, len(b[p]), m.wRows[p], m.wCols[p])
		}
		if err := m.dev.Download(w[p], m.w[p]); err != nil {
			return err
		}
		if err := m.dev.Download(b[p], m.b[p]); err != nil {
			return err
		}
	}
	return nil
}

// DeviceGradients computes a cluster replica's micro-shard gradients on a
// compute.Device (a CUDA worker): each step the model's parameters and
// quantization controls go to the device, each shard's inputs follow, and
// the gradients come back to be reduced with the other workers'. Dropout
// masks are the device's, so a shard's gradient differs in its last bits
// (and in its dropout draws) from the one a CPU replica would compute; the
// reduction stays exact and every replica applies the same sum.
type DeviceGradients struct {
	dev     compute.Device
	micro   int
	net     *DeviceNet
	teacher *DeviceNet
	kd      *distill.Config
	seed    uint64
	gw, gb  [][]float32
	out     [][]float32 // gw and gb in Model.Params order
	labels  []int32
}

var _ ShardGradients = (*DeviceGradients)(nil)

// NewDeviceGradients prepares dev for shards of micro samples of model m
// (its spec's dropout rates) distilled, when kd is set, from teacher
// (trained, fixed; its weights go to the device once).
func NewDeviceGradients(dev compute.Device, m *model.Model, micro int, teacher *model.Model, kd *distill.Config, seed uint64) (*DeviceGradients, error) {
	g := &DeviceGradients{dev: dev, micro: micro, kd: kd, seed: seed}
	if kd != nil {
		if teacher == nil {
			return nil, errors.New("trainer: distillation on a device needs its teacher")
		}
		var err error
		if g.teacher, err = deviceNetOf(dev, teacher, micro, seed, false); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// Free releases the device buffers.
func (g *DeviceGradients) Free() {
	for _, n := range []*DeviceNet{g.net, g.teacher} {
		if n != nil {
			n.Free()
		}
	}
	g.net, g.teacher = nil, nil
}

// Prepare implements ShardGradients: the network is (re)built when the
// model's architecture changed (thinning, factorization), and gets the
// current parameters and quantization.
func (g *DeviceGradients) Prepare(m *model.Model) error {
	for name, o := range m.ActQuant {
		if o.Enabled {
			return fmt.Errorf("trainer: activation quantization (%s) is not computed on the device yet", name)
		}
	}
	w, b, where := splitParams(m)
	if g.net != nil {
		same := len(w) == len(g.net.w)
		for p := 0; same && p < len(w); p++ {
			same = len(w[p]) == g.net.wRows[p]*g.net.wCols[p] && len(b[p]) == g.net.wRows[p]
		}
		if !same {
			g.net.Free()
			g.net = nil
		}
	}
	if g.net == nil {
		var err error
		if g.net, err = deviceNetOf(g.dev, m, g.micro, g.seed, true); err != nil {
			return err
		}
		g.gw, g.gb = make([][]float32, len(w)), make([][]float32, len(b))
		for p := range w {
			g.gw[p], g.gb[p] = make([]float32, len(w[p])), make([]float32, len(b[p]))
		}
		g.out = make([][]float32, len(where))
		for i, wh := range where {
			if wh[0] == 0 {
				g.out[i] = g.gw[wh[1]]
			} else {
				g.out[i] = g.gb[wh[1]]
			}
		}
		g.labels = make([]int32, g.micro)
	}
	if err := g.net.SetWeights(w, b); err != nil {
		return err
	}
	return g.net.setQuantFrom(m)
}

// Shard implements ShardGradients.
func (g *DeviceGradients) Shard(x, y []float32, stream uint64) ([][]float32, ShardStats, error) {
	n := g.net
	if len(y) != g.micro || len(x) != g.micro*n.in {
		return nil, ShardStats{}, fmt.Errorf("trainer: device shard of %d samples (%d inputs), want %d", len(y), len(x), g.micro)
	}
	for i, v := range y {
		g.labels[i] = int32(v)
	}
	if err := g.dev.Upload(n.x, x); err != nil {
		return nil, ShardStats{}, err
	}
	if err := g.dev.UploadInt32(n.labels, g.labels); err != nil {
		return nil, ShardStats{}, err
	}
	st := DeviceStep{Step: int64(stream)}
	if g.teacher != nil {
		st.Teacher = g.teacher.forward(n.x, g.micro, false, 0)
		st.T, st.Alpha = float32(g.kd.Temperature), float32(g.kd.Alpha)
	}
	n.ResetStats()
	n.gradients(st)
	for p := range n.w {
		if err := g.dev.Download(g.gw[p], n.gw[p]); err != nil {
			return nil, ShardStats{}, err
		}
		if err := g.dev.Download(g.gb[p], n.gb[p]); err != nil {
			return nil, ShardStats{}, err
		}
	}
	ts, err := n.ReadStats()
	if err != nil {
		return nil, ShardStats{}, err
	}
	inv := 1 / float64(g.micro)
	return g.out, ShardStats{Loss: float32(ts.Loss * inv), Distill: float32(ts.Distill * inv), Correct: float32(ts.Correct)}, nil
}
