package trainer

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/model"
)

// deviceBackend trains on a DeviceNet: the sets are uploaded once, every
// step runs on the device, and the host only reads the weights when a
// policy or the epoch's metrics ask (pull) and sends back what a policy
// changed (push).
type deviceBackend struct {
	t                   *Trainer
	dev                 compute.Device
	net, teacher        *DeviceNet
	trainSet, val, test *DeviceData
	idx, shifts         compute.Buffer
	mu, wd              float32
	kdT, kdAlpha        float32
	fresh               bool // the host's parameters are the device's
}

// dropoutSalt separates a network's dropout stream from its seed's other
// uses.
const dropoutSalt = 0x64726f70

func newDeviceBackend(t *Trainer) (d *deviceBackend, err error) {
	cfg := t.cfg
	if err := DeviceSupports(cfg, false); err != nil {
		return nil, err
	}
	o := cfg.Optimizer.(*sgd) // DeviceSupports checked
	d = &deviceBackend{t: t, dev: cfg.Device, mu: float32(o.c.Momentum), wd: float32(o.c.WeightDecay), fresh: true}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	m := cfg.Model
	if d.net, err = deviceNetOf(cfg.Device, m, cfg.Batch, cfg.Seed, true); err != nil {
		return nil, err
	}
	decay := make([]bool, len(m.Params))
	for i := range decay {
		decay[i] = o.c.decay(i) != 0
	}
	if err = d.net.SetDecay(decay); err != nil {
		return nil, err
	}
	if cfg.KD != nil {
		d.kdT, d.kdAlpha = float32(cfg.KD.Temperature), float32(cfg.KD.Alpha)
		if d.teacher, err = deviceNetOf(cfg.Device, cfg.Teachers[0], cfg.Batch, cfg.Seed, false); err != nil {
			return nil, fmt.Errorf("trainer: the teacher: %w", err)
		}
	}
	for _, s := range []struct {
		dst **DeviceData
		set *data.Set
	}{{&d.trainSet, cfg.Train}, {&d.val, cfg.Val}, {&d.test, cfg.Test}} {
		if s.set != nil && s.set.Len() > 0 {
			if *s.dst, err = UploadSet(cfg.Device, s.set); err != nil {
				return nil, err
			}
		}
	}
	if d.idx, err = cfg.Device.Alloc(d.trainSet.N); err != nil {
		return nil, err
	}
	if cfg.Augment.On() {
		if d.shifts, err = cfg.Device.Alloc(3 * d.trainSet.N); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// deviceNetOf puts a model's network and weights on dev: to train, with
// its dropout; else (a teacher) for the forward pass alone.
func deviceNetOf(dev compute.Device, m *model.Model, batch int, seed uint64, train bool) (*DeviceNet, error) {
	if m.Net.Normalize != nil {
		return nil, errors.New("trainer: the device path does not normalize a network's input yet (an imported model's mean and std): train it on the CPU")
	}
	layers := slices.Clone(m.Net.Layers)
	if !train {
		for i := range layers {
			layers[i].Dropout = 0
		}
	}
	net, err := NewDeviceNet(dev, layers, batch, seed)
	if err != nil {
		return nil, err
	}
	if err = net.setCompression(m); err == nil && train {
		err = net.SetDropout(m.Spec.InputDropout, seed^dropoutSalt)
	}
	if err == nil {
		err = net.SetWeightsFrom(m)
	}
	if err != nil {
		net.Free()
		return nil, err
	}
	return net, nil
}

func (d *deviceBackend) beginEpoch(epoch int, order []int) error {
	o32 := make([]int32, len(order))
	for i, v := range order {
		o32[i] = int32(v)
	}
	if err := d.dev.UploadInt32(d.idx, o32); err != nil {
		return err
	}
	if d.shifts != nil {
		sh := make([]int32, 3*len(order))
		for id := range len(order) {
			dy, dx := d.t.batch.Shift(id, epoch)
			sh[3*id], sh[3*id+1] = int32(dy), int32(dx)
			if d.t.batch.Flipped(id, epoch) {
				sh[3*id+2] = 1
			}
		}
		if err := d.dev.UploadInt32(d.shifts, sh); err != nil {
			return err
		}
	}
	d.net.ResetStats()
	return nil
}

func (d *deviceBackend) load([]int, int) {} // the step gathers its batch on the device

func (d *deviceBackend) train(_ context.Context, _ []int, _, inEpoch int) error {
	t := d.t
	s := &t.state
	if err := d.net.setQuantFrom(t.cfg.Model); err != nil {
		return err
	}
	st := DeviceStep{LR: float32(s.LR), Momentum: d.mu, WeightDecay: d.wd, Step: s.Step, T: d.kdT, Alpha: d.kdAlpha}
	set := t.cfg.Train
	d.net.TrainStep(d.trainSet, d.idx, d.shifts, set.Rows, set.Cols, inEpoch*t.cfg.Batch, st, d.teacher)
	t.cfg.Optimizer.SetSteps(t.cfg.Optimizer.Steps() + 1)
	s.Loss, s.ExtraLoss = 0, 0 // summed on the device (sums)
	d.fresh = false
	return nil
}

func (d *deviceBackend) sums(r running) (running, error) {
	ts, err := d.net.ReadStats() // waits for the steps so far
	if err != nil {
		return r, err
	}
	b := float64(d.t.cfg.Batch) // the device sums over samples; the loop over steps' means
	r.loss += ts.Loss / b
	r.kd += ts.Distill / b
	r.correct += int(ts.Correct)
	return r, nil
}

func (d *deviceBackend) evaluate(set *data.Set) (acc, loss float64, err error) {
	if err := d.net.setQuantFrom(d.t.cfg.Model); err != nil {
		return 0, 0, err
	}
	switch set {
	case d.t.cfg.Val:
		return d.net.Evaluate(d.val)
	case d.t.cfg.Test:
		return d.net.Evaluate(d.test)
	}
	dd, err := UploadSet(d.dev, set)
	if err != nil {
		return 0, 0, err
	}
	defer dd.Free(d.dev)
	return d.net.Evaluate(dd)
}

func (d *deviceBackend) pull() error {
	if d.fresh {
		return nil
	}
	if err := d.net.WeightsInto(d.t.cfg.Model); err != nil {
		return err
	}
	d.fresh = true
	return nil
}

func (d *deviceBackend) push() error {
	if err := d.net.SetWeightsFrom(d.t.cfg.Model); err != nil {
		return err
	}
	d.fresh = true
	return d.net.setMasks(d.t.cfg.Model, d.t.state.Masks)
}

// save adds the momentum buffers, in Model.Params order (none without
// momentum, as the graph's optimizer keeps none), and names the device.
func (d *deviceBackend) save(sn *Snapshot) error {
	sn.Backend, sn.OptimizerSteps = d.dev.Name(), d.t.cfg.Optimizer.Steps()
	if d.mu == 0 {
		return nil
	}
	st, err := d.net.State()
	if err != nil {
		return err
	}
	sn.Optimizer = st.V
	return nil
}

// restore uploads a snapshot's parameters and running statistics (already
// in the model), masks and momentum buffers; a snapshot written on another
// backend resumes here unless the model drops out (each backend draws its
// masks its own way).
func (d *deviceBackend) restore(sn *Snapshot) error {
	t := d.t
	if sn.Backend != d.dev.Name() && (len(sn.Dropout) > 0 || d.net.drops()) {
		from := "the CPU graph"
		if sn.Backend != "" {
			from = "the " + sn.Backend + " device"
		}
		return fmt.Errorf("trainer: resume: the checkpoint was written on %s, whose dropout masks are drawn differently: resume it there", from)
	}
	mod := t.cfg.Model
	st := &DeviceNetState{}
	for i, p := range mod.Params {
		v := make([]float32, p.Size())
		if sn.Optimizer != nil {
			if i >= len(sn.Optimizer) || len(sn.Optimizer[i]) != len(v) {
				return fmt.Errorf("trainer: resume: the checkpoint's optimizer state does not fit %s", p.Name)
			}
			copy(v, sn.Optimizer[i])
		}
		st.W, st.V = append(st.W, p.Data()), append(st.V, v)
	}
	if err := d.net.SetState(st); err != nil {
		return err
	}
	if err := d.net.setStatistics(mod); err != nil {
		return err
	}
	t.cfg.Optimizer.SetSteps(sn.OptimizerSteps)
	d.fresh = true
	return d.net.setMasks(mod, t.state.Masks)
}

func (d *deviceBackend) close() {
	for _, n := range []*DeviceNet{d.net, d.teacher} {
		if n != nil {
			n.Free()
		}
	}
	for _, s := range []*DeviceData{d.trainSet, d.val, d.test} {
		if s != nil {
			s.Free(d.dev)
		}
	}
	for _, b := range []compute.Buffer{d.idx, d.shifts} {
		if b != nil {
			d.dev.Free(b)
		}
	}
	d.net, d.teacher, d.trainSet, d.val, d.test, d.idx, d.shifts = nil, nil, nil, nil, nil, nil, nil
}

// setQuantFrom sets each weight's fake quantization and the batch norms'
// freezing from the model's controls (the QuantPolicy's); activation
// observers are the model's own.
func (m *DeviceNet) setQuantFrom(mod *model.Model) error {
	m.bnFrozen = mod.BN != nil && mod.BN.Frozen
	for _, prm := range mod.Weights() {
		ctl, bits, perTensor := mod.Quant[prm.Name], 0, false
		if ctl != nil && ctl.Enabled {
			if !ctl.Spec.Symmetric {
				return fmt.Errorf("trainer: asymmetric quantization of %s is not computed on the device yet", prm.Name)
			}
			bits, perTensor = ctl.Spec.Bits, !ctl.Spec.PerChannel
		}
		if err := m.SetQuant(prm.Name, bits, perTensor); err != nil {
			return err
		}
	}
	return nil
}

// setMasks uploads the parameters' masks, given in Model.Params order for
// the model mod of the network's architecture (nil keeps every element).
func (m *DeviceNet) setMasks(mod *model.Model, masks [][]byte) error {
	if err := m.sameParams(mod); err != nil {
		return err
	}
	if len(masks) != len(m.params) {
		return fmt.Errorf("trainer: %d masks for %d parameters", len(masks), len(m.params))
	}
	for i, p := range m.params {
		if masks[i] != nil && len(masks[i]) != p.n {
			return fmt.Errorf("trainer: a mask of %d for %s of %d", len(masks[i]), p.Name, p.n)
		}
		f := slices.Repeat([]float32{1}, p.n)
		for j, v := range masks[i] {
			f[j] = float32(v)
		}
		if err := m.dev.Upload(p.mask, f); err != nil {
			return err
		}
	}
	return nil
}
