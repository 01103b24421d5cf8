package trainer_test

import (
	"context"
	"slices"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/compute/host"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/schedule"
	"github.com/lathe-ml/lathe/trainer"
)

// resNetRig is what the ResNet tests train: the ResNet-8 preset on 2 000
// real MNIST images (1 000 to test), 50 a batch, one epoch, SGD with
// momentum on two threads.
type resNetRig struct {
	train, test *data.Set
	net         graph.Network
	eng         *cpu.Engine
	dev         compute.Device // nil: the CPU graph
}

func newResNetRig(t *testing.T) resNetRig {
	t.Helper()
	train, test, err := data.Load("mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	net, err := graph.ResNet(graph.Shape{H: 28, W: 28, C: 1}, 8, 10)
	if err != nil {
		t.Fatal(err)
	}
	return resNetRig{train: train.Slice("train", 0, 2000), test: test.Slice("test", 0, 1000), net: net, eng: cpu.New(cpu.Options{Threads: 2})}
}

// run trains m with policies, resuming from resume (nil: from the start)
// and handing a snapshot to checkpoint every `every` steps.
func (r resNetRig) run(m *model.Model, every int, resume *trainer.Snapshot, checkpoint func(*trainer.Snapshot) error, policies ...trainer.Policy) (*trainer.Result, error) {
	var sizes []int
	for _, p := range m.Params {
		sizes = append(sizes, p.Size())
	}
	opt, err := trainer.NewOptimizer(trainer.OptimConfig{Kind: "sgd", Momentum: 0.9}, sizes)
	if err != nil {
		return nil, err
	}
	tr, err := trainer.New(trainer.Config{Model: m, Engine: r.eng, Device: r.dev, Train: r.train, Test: r.test, Batch: 50, Epochs: 1, Seed: 1, Optimizer: opt,
		Resume: resume, Checkpoint: checkpoint, CheckpointSteps: every, Policies: policies})
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	return tr.Run(context.Background())
}

// TestResNetTrainsAndResumes trains the ResNet-8 preset (batch norms,
// strided and padded convolutions, residual additions, global pooling) on
// 2 000 real MNIST images, a quarter of two channel groups pruned on the
// way: its test accuracy leaves chance far behind.
// A second run is stopped at step 20 — a checkpoint written and read back
// through rundir into a fresh model, batch norms' running statistics
// included — and resumed: its final weights and running statistics equal
// the uninterrupted run's, bit for bit.
func TestResNetTrainsAndResumes(t *testing.T) {
	rig := newResNetRig(t)
	net := rig.net
	run := func(m *model.Model, resume *trainer.Snapshot, checkpoint func(*trainer.Snapshot) error) (*trainer.Result, error) {
		return rig.run(m, 20, resume, checkpoint, &trainer.LRPolicy{Schedule: schedule.LR{Kind: "constant", Base: 0.05, Total: 1}},
			// A quarter of the stem's residual group and of block 2's inner
			// channels, pruned with all that depends on them at sample 500.
			&trainer.PrunePolicy{Label: "groups", Layers: []string{"conv1", "block2.conv1"}, Granularity: compress.DependencyGroups,
				Norm: compress.L2, Schedule: schedule.Sparsity{Kind: "one_shot", Final: 0.25, Start: 500, End: 500, Every: 1}})
	}
	straight, err := model.FromNetwork(net, "kaiming", 1)
	if err != nil {
		t.Fatal(err)
	}
	var saved []byte
	var ck *rundir.Checkpointer
	ck = &rundir.Checkpointer{Job: "resnet", Model: func() *model.Model { return straight }}
	res, err := run(straight, nil, func(sn *trainer.Snapshot) error {
		if sn.Step != 20 || saved != nil {
			return nil
		}
		f, err := ck.File(sn, straight)
		if err == nil {
			saved, err = checkpoint.Encode(f)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("test accuracy %.3f after 40 steps", res.TestAccuracy)
	if res.TestAccuracy < 0.3 { // chance is 0.1; 0.55 here (batch norms' running statistics lag after 40 steps)
		t.Fatalf("test accuracy %.3f after 40 steps", res.TestAccuracy)
	}
	// The pruned channels stayed zero through training: 4 of the stem's 16
	// scales, 8 of block 2's first batch norm's 32.
	for name, want := range map[string]int{"bn1": 4, "block1.bn2": 4, "block2.bn1": 8} {
		zero := 0
		for _, v := range straight.Param(name).Data() {
			if v == 0 {
				zero++
			}
		}
		if zero != want {
			t.Fatalf("%s has %d zero scales after training, want %d", name, zero, want)
		}
	}
	f, err := checkpoint.Decode(saved)
	if err != nil {
		t.Fatal(err)
	}
	st, err := rundir.ReadTraining(f, "step 20")
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := model.FromNetwork(net, "kaiming", 99) // other initial values, all overwritten
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Restore(f, "step 20", fresh); err != nil {
		t.Fatal(err)
	}
	if _, err := run(fresh, st.Snapshot, nil); err != nil {
		t.Fatal(err)
	}
	for i, p := range straight.Params {
		if !slices.Equal(p.Data(), fresh.Params[i].Data()) {
			t.Fatalf("%s differs after resuming", p.Name)
		}
	}
	for i, b := range straight.Buffers {
		if !slices.Equal(b.Data(), fresh.Buffers[i].Data()) {
			t.Fatalf("%s differs after resuming", b.Name)
		}
	}
}

// quantizeFolded sets m up as the plan does for a quantize block over
// every weight with activations: each convolution trains with its batch
// norm folded in, observers after every folded batch norm and residual
// addition; statistics freeze at sample freezeBN.
func quantizeFolded(m *model.Model, freezeBN int64) *trainer.QuantPolicy {
	p := &trainer.QuantPolicy{Steps: []trainer.QuantStep{{Bits: 8}}, FreezeAt: 1500, FreezeBNAt: freezeBN}
	m.Quant, m.ActQuant = map[string]*model.QuantControl{}, map[string]*model.Observer{}
	for _, w := range m.Weights() {
		m.Quant[w.Name] = &model.QuantControl{Spec: model.QuantSpec{Bits: 8, Symmetric: true, PerChannel: true}}
		p.Layers = append(p.Layers, w.Name)
	}
	m.Fold, m.BN = m.Net.FoldPairs(), &model.BNControl{}
	for _, l := range m.Net.Layers {
		if l.Kind == graph.Add || l.Kind == graph.BatchNorm {
			m.ActQuant[l.Name] = &model.Observer{Spec: model.QuantSpec{Bits: 8}, Momentum: 0.9}
			p.Observers = append(p.Observers, l.Name)
		}
	}
	return p
}

// TestFoldedQATResNetFreezesAndResumes trains ResNet-8 with 8-bit weights
// and activations, its batch norms folded into the convolutions and their
// statistics frozen at sample 1 750 (after step 35 of 40, the learning
// rate decaying on a cosine): it learns, the
// statistics do not move after the freeze, and a run resumed from step 30
// ends bit-identical to the uninterrupted one. (Frozen earlier, while the
// weights still move this fast, the statistics fall behind them and
// accuracy drops, float or quantized: recipes freeze them late.)
func TestFoldedQATResNetFreezesAndResumes(t *testing.T) {
	rig := newResNetRig(t)
	net := rig.net
	run := func(m *model.Model, qp *trainer.QuantPolicy, resume *trainer.Snapshot, checkpoint func(*trainer.Snapshot) error) (*trainer.Result, error) {
		return rig.run(m, 5, resume, checkpoint, &trainer.LRPolicy{Schedule: schedule.LR{Kind: "cosine", Base: 0.05, Total: 2000}}, qp)
	}
	straight, err := model.FromNetwork(net, "kaiming", 1)
	if err != nil {
		t.Fatal(err)
	}
	var saved []byte
	var atFreeze []float32
	ck := &rundir.Checkpointer{Job: "resnet", Model: func() *model.Model { return straight }}
	res, err := run(straight, quantizeFolded(straight, 1750), nil, func(sn *trainer.Snapshot) error {
		if sn.Step == 35 {
			atFreeze = slices.Clone(straight.Buffer("block2.bn1.running_var").Data())
		}
		if sn.Step == 30 {
			f, err := ck.File(sn, straight)
			if err == nil {
				saved, err = checkpoint.Encode(f)
			}
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("test accuracy %.3f after 40 steps", res.TestAccuracy)
	if res.TestAccuracy < 0.3 {
		t.Fatalf("test accuracy %.3f after 40 steps", res.TestAccuracy)
	}
	if !straight.BN.Frozen || !slices.Equal(atFreeze, straight.Buffer("block2.bn1.running_var").Data()) {
		t.Fatal("running statistics moved after the freeze")
	}
	f, err := checkpoint.Decode(saved)
	if err != nil {
		t.Fatal(err)
	}
	st, err := rundir.ReadTraining(f, "step 30")
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := model.FromNetwork(net, "kaiming", 99)
	if err != nil {
		t.Fatal(err)
	}
	qp := quantizeFolded(fresh, 1750)
	if err := st.Restore(f, "step 30", fresh); err != nil {
		t.Fatal(err)
	}
	if _, err := run(fresh, qp, st.Snapshot, nil); err != nil {
		t.Fatal(err)
	}
	for i, p := range straight.Params {
		if !slices.Equal(p.Data(), fresh.Params[i].Data()) {
			t.Fatalf("%s differs after resuming", p.Name)
		}
	}
	for i, b := range straight.Buffers {
		if !slices.Equal(b.Data(), fresh.Buffers[i].Data()) {
			t.Fatalf("%s differs after resuming", b.Name)
		}
	}
}

// TestFoldedQATResNetResumesOnDevice: the same on the host device (the
// device path's checkpoints: momentum, masks, running statistics and
// observers), over 800 images: a run resumed from step 10 of 16, batch
// norms and observers frozen after it, ends bit-identical to the
// uninterrupted one.
func TestFoldedQATResNetResumesOnDevice(t *testing.T) {
	rig := newResNetRig(t)
	rig.train, rig.test = rig.train.Slice("train", 0, 800), rig.test.Slice("test", 0, 200)
	dev := host.New(rig.eng)
	defer dev.Close()
	rig.dev = dev
	net := rig.net
	quant := func(m *model.Model) *trainer.QuantPolicy {
		qp := quantizeFolded(m, 650)
		qp.FreezeAt = 600
		return qp
	}
	run := func(m *model.Model, qp *trainer.QuantPolicy, resume *trainer.Snapshot, checkpoint func(*trainer.Snapshot) error) error {
		_, err := rig.run(m, 10, resume, checkpoint, &trainer.LRPolicy{Schedule: schedule.LR{Kind: "cosine", Base: 0.05, Total: 800}}, qp)
		return err
	}
	straight, err := model.FromNetwork(net, "kaiming", 1)
	if err != nil {
		t.Fatal(err)
	}
	var saved []byte
	ck := &rundir.Checkpointer{Job: "resnet", Model: func() *model.Model { return straight }}
	if err := run(straight, quant(straight), nil, func(sn *trainer.Snapshot) error {
		if sn.Step != 10 || saved != nil {
			return nil
		}
		f, err := ck.File(sn, straight)
		if err == nil {
			saved, err = checkpoint.Encode(f)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	f, err := checkpoint.Decode(saved)
	if err != nil {
		t.Fatal(err)
	}
	st, err := rundir.ReadTraining(f, "step 10")
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := model.FromNetwork(net, "kaiming", 99)
	if err != nil {
		t.Fatal(err)
	}
	qp := quant(fresh)
	if err := st.Restore(f, "step 10", fresh); err != nil {
		t.Fatal(err)
	}
	if err := run(fresh, qp, st.Snapshot, nil); err != nil {
		t.Fatal(err)
	}
	for i, p := range append(straight.Params, straight.Buffers...) {
		if !slices.Equal(p.Data(), append(fresh.Params, fresh.Buffers...)[i].Data()) {
			t.Fatalf("%s differs after resuming", p.Name)
		}
	}
	for name, o := range straight.ActQuant {
		if r := fresh.ActQuant[name]; *o != *r || !o.Frozen {
			t.Fatalf("observer %s: straight %+v, resumed %+v", name, *o, *r)
		}
	}
	if !straight.BN.Frozen {
		t.Fatal("batch norms not frozen")
	}
}
