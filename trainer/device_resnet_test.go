package trainer

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/compute/host"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/schedule"
)

// smallResNet is the ResNet-8 preset on 8×8 images of 4 classes: strided
// and padded 3×3 convolutions without bias, batch norms with ReLU, a 1×1
// projection shortcut, residual additions, global average pooling.
func smallResNet(t testing.TB) graph.Network {
	t.Helper()
	net, err := graph.ResNet(graph.Shape{H: 8, W: 8, C: 1}, 8, 4)
	if err != nil {
		t.Fatal(err)
	}
	return net
}

// TestDeviceResNetGradient: the device step's gradients of every
// parameter of a ResNet-8 (convolutions, batch norms' scales and shifts,
// the classifier) against finite differences of its training loss.
func TestDeviceResNetGradient(t *testing.T) {
	dev := host.New(cpu.New(cpu.Options{Threads: 1}))
	defer dev.Close()
	m, err := NewDeviceNet(dev, smallResNet(t).Layers, 8, 4)
	if err != nil {
		t.Fatal(err)
	}
	checkGradient(t, m, 4, 1e-3, 97)
}

// resNetModel is the small ResNet as a model with its running statistics
// moved off their start (so that evaluation tests them).
func resNetModel(t testing.TB, seed uint64) *model.Model {
	t.Helper()
	m, err := model.FromNetwork(smallResNet(t), "kaiming", seed)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 9))
	for _, b := range m.Buffers {
		for i := range b.Data() {
			b.Data()[i] = 0.2*r.Float32() - 0.1
			if b.Name[len(b.Name)-3:] == "var" {
				b.Data()[i] += 1
			}
		}
	}
	return m
}

// TestDeviceResNetEvaluateMatchesModel: evaluation on the device (batch
// norms by their running statistics) gives the CPU graph's accuracy and
// loss.
func TestDeviceResNetEvaluateMatchesModel(t *testing.T) {
	eng := cpu.New(cpu.Options{Threads: 1})
	dev := host.New(eng)
	defer dev.Close()
	m := resNetModel(t, 3)
	set := randomImages(100, 4, 5)
	acc, loss, err := EvaluateModel(m, eng, set, 32)
	if err != nil {
		t.Fatal(err)
	}
	net, err := deviceNetOf(dev, m, 32, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	defer net.Free()
	d, err := UploadSet(dev, set)
	if err != nil {
		t.Fatal(err)
	}
	dacc, dloss, err := net.Evaluate(d)
	if err != nil {
		t.Fatal(err)
	}
	if dacc != acc || math.Abs(dloss-loss) > 1e-5*(1+loss) {
		t.Fatalf("device accuracy %v loss %v, CPU graph %v and %v", dacc, dloss, acc, loss)
	}
}

// trainResNet trains the small ResNet from seed's weights on dev (nil: the
// CPU graph) for epochs over set with the dense ResNet recipe's settings —
// shifts and flips, SGD with momentum on a cosine schedule, biases and
// batch norms left out of weight decay — and returns the model.
func trainResNet(t testing.TB, dev compute.Device, set *data.Set, batch, epochs int) *model.Model {
	t.Helper()
	eng := cpu.New(cpu.Options{Threads: 2})
	m := resNetModel(t, 7)
	noDecay := make([]bool, len(m.Params))
	for i, p := range m.Params {
		noDecay[i] = p.Bias || p.Norm
	}
	var sizes []int
	for _, p := range m.Params {
		sizes = append(sizes, p.Size())
	}
	opt, err := NewOptimizer(OptimConfig{Kind: "sgd", Momentum: 0.9, WeightDecay: 5e-3, NoDecay: noDecay}, sizes)
	if err != nil {
		t.Fatal(err)
	}
	total := int64(data.Steps(set.Len(), batch) * batch * epochs)
	tr, err := New(Config{Model: m, Engine: eng, Device: dev, Train: set, Batch: batch, Epochs: epochs, Seed: 3, Optimizer: opt,
		Augment: data.Augment{Shift: 1, Flip: true}, Policies: []Policy{&LRPolicy{Schedule: schedule.LR{Kind: "cosine", Base: 0.1, Total: total}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if _, err := tr.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	return tr.Model()
}

// TestDeviceResNetStepMatchesGraph: two training steps of the small
// ResNet on the device agree with the CPU graph's (the same batch norm
// statistics and running updates, the same flips and shifts, the same
// weight decay by parameter kind) to float32 rounding.
func TestDeviceResNetStepMatchesGraph(t *testing.T) {
	dev := host.New(cpu.New(cpu.Options{Threads: 1}))
	defer dev.Close()
	set := randomImages(32, 4, 11)
	cpuModel := trainResNet(t, nil, set, 16, 1)
	devModel := trainResNet(t, dev, set, 16, 1)
	for i, p := range cpuModel.Params {
		for j, v := range p.Data() {
			if d := devModel.Params[i].Data()[j]; math.Abs(float64(d-v)) > 2e-5*(1+math.Abs(float64(v))) {
				t.Fatalf("%s[%d]: device %v, CPU graph %v", p.Name, j, d, v)
			}
		}
	}
	for i, b := range cpuModel.Buffers {
		for j, v := range b.Data() {
			if d := devModel.Buffers[i].Data()[j]; math.Abs(float64(d-v)) > 2e-5*(1+math.Abs(float64(v))) {
				t.Fatalf("%s[%d]: device %v, CPU graph %v", b.Name, j, d, v)
			}
		}
	}
}

// TestStrictDeviceResNetStep runs ResNet training steps (batch norms,
// residual additions, strided convolutions, flips and shifts, weight decay
// by kind) on the strict device, whose memory faults when the host touches
// it outside the device's own calls, and checks parameters and running
// statistics are bit for bit the reference device's.
func TestStrictDeviceResNetStep(t *testing.T) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	eng := cpu.New(cpu.Options{Threads: 2})
	strict, ref := host.NewStrict(eng), host.New(eng)
	defer strict.Close()
	defer ref.Close()
	set := randomImages(96, 4, 13)
	st := trainResNet(t, strict, set, 16, 2)
	rf := trainResNet(t, ref, set, 16, 2)
	if strict.Kernels < 1000 {
		t.Fatalf("only %d strict device calls ran", strict.Kernels)
	}
	for i, p := range append(st.Params, st.Buffers...) {
		want := append(rf.Params, rf.Buffers...)[i].Data()
		for j, v := range p.Data() {
			if math.Float32bits(v) != math.Float32bits(want[j]) {
				t.Fatalf("%s[%d]: strict %v, reference %v", p.Name, j, v, want[j])
			}
		}
	}
}

// TestDeviceSupportsNamesWhatIsMissing: what the device path does not do
// yet on these networks is refused before training, naming the field.
func TestDeviceSupportsNamesWhatIsMissing(t *testing.T) {
	dev := host.New(cpu.New(cpu.Options{Threads: 1}))
	defer dev.Close()
	opt, err := NewOptimizer(OptimConfig{Kind: "sgd", Momentum: 0.9}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mobile, err := graph.MobileNet(graph.Shape{H: 28, W: 28, C: 1}, 0.5, 10)
	if err != nil {
		t.Fatal(err)
	}
	mm, err := model.FromNetwork(mobile, "kaiming", 1)
	if err != nil {
		t.Fatal(err)
	}
	folded := resNetModel(t, 1)
	folded.BN = &model.BNControl{}
	for _, tc := range []struct {
		m     *model.Model
		field string
		what  string
	}{
		{mm, "model.arch", "no relu6 activation"},
		{folded, "quantize", "batch norms folded"},
		{resNetModel(t, 1), "", ""},
	} {
		err := DeviceSupports(Config{Device: dev, Model: tc.m, Optimizer: opt}, false)
		var u *Unsupported
		switch {
		case tc.what == "" && err != nil:
			t.Errorf("the dense ResNet refused: %v", err)
		case tc.what != "" && (!errors.As(err, &u) || u.Field != tc.field || !strings.Contains(err.Error(), tc.what)):
			t.Errorf("error %v, want field %s and %q", err, tc.field, tc.what)
		}
	}
}
