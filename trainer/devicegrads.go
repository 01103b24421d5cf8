package trainer

import (
	"errors"
	"fmt"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/distill"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/model"
)

// SetWeightsFrom uploads a model's parameters and batch norms' running
// statistics; the model has the network's architecture.
func (m *DeviceNet) SetWeightsFrom(mod *model.Model) error {
	if err := m.sameParams(mod); err != nil {
		return err
	}
	vals := make([][]float32, len(mod.Params))
	for i, p := range mod.Params {
		vals[i] = p.Data()
	}
	if err := m.SetParams(vals); err != nil {
		return err
	}
	return m.setStatistics(mod)
}

// setStatistics uploads what the model holds besides parameters: batch
// norms' running statistics and activation observers.
func (m *DeviceNet) setStatistics(mod *model.Model) error {
	for _, L := range m.layers {
		if L.aq != nil {
			o := L.aq
			if err := m.dev.Upload(L.obs, []float32{o.Min, o.Max, b2f(o.Initialized), 0, 0}); err != nil {
				return err
			}
		}
	}
	return m.runningStats(mod, func(dst compute.Buffer, buf []float32) error { return m.dev.Upload(dst, buf) })
}

func b2f(b bool) float32 {
	if b {
		return 1
	}
	return 0
}

// WeightsInto downloads the network's parameters and batch norms' running
// statistics into a model of its architecture.
func (m *DeviceNet) WeightsInto(mod *model.Model) error {
	if err := m.sameParams(mod); err != nil {
		return err
	}
	for i, p := range m.params {
		if err := m.dev.Download(mod.Params[i].Data(), p.w); err != nil {
			return err
		}
	}
	for _, L := range m.layers {
		if L.aq != nil {
			o := make([]float32, 5)
			if err := m.dev.Download(o, L.obs); err != nil {
				return err
			}
			L.aq.Min, L.aq.Max, L.aq.Initialized = o[0], o[1], o[2] != 0
		}
	}
	return m.runningStats(mod, func(src compute.Buffer, buf []float32) error { return m.dev.Download(buf, src) })
}

// sameParams checks that mod's parameters are the network's.
func (m *DeviceNet) sameParams(mod *model.Model) error {
	if len(mod.Params) != len(m.params) {
		return fmt.Errorf("trainer: a model of %d parameters for a network of %d", len(mod.Params), len(m.params))
	}
	for i, p := range m.params {
		if q := mod.Params[i]; q.Name != p.Name || q.Size() != p.n {
			return fmt.Errorf("trainer: the model's parameter %d is %s of %d values, the network's %s of %d", i, q.Name, q.Size(), p.Name, p.n)
		}
	}
	return nil
}

// runningStats calls move with each batch norm's running mean and
// variance buffers and the model's buffers of them.
func (m *DeviceNet) runningStats(mod *model.Model, move func(compute.Buffer, []float32) error) error {
	for _, L := range m.layers {
		if L.Kind != graph.BatchNorm {
			continue
		}
		for _, s := range []struct {
			name string
			buf  compute.Buffer
		}{{L.Name + ".running_mean", L.rmean}, {L.Name + ".running_var", L.rvar}} {
			b := mod.Buffer(s.name)
			if b == nil || b.Size() != L.In.C {
				return fmt.Errorf("trainer: the model has no %s of %d values", s.name, L.In.C)
			}
			if err := move(s.buf, b.Data()); err != nil {
				return err
			}
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
	out     [][]float32 // the gradients, in Model.Params order
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
	if g.net != nil && g.net.sameParams(m) != nil {
		g.net.Free()
		g.net = nil
	}
	if g.net == nil {
		var err error
		if g.net, err = deviceNetOf(g.dev, m, g.micro, g.seed, true); err != nil {
			return err
		}
		g.out = make([][]float32, len(m.Params))
		for i, p := range m.Params {
			g.out[i] = make([]float32, p.Size())
		}
		g.labels = make([]int32, g.micro)
	}
	if err := g.net.SetWeightsFrom(m); err != nil {
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
	for i, p := range n.params {
		if err := g.dev.Download(g.out[i], p.g); err != nil {
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
