package trainer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/compute/enginetest"
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

// sameModels fails t where got's parameters or buffers differ from want's
// by more than tol·(1 + |want|), or, with tol 0, by a single bit.
func sameModels(t testing.TB, got, want *model.Model, tol float64, gotName, wantName string) {
	t.Helper()
	gs := append(slices.Clone(got.Params), got.Buffers...)
	for i, p := range append(slices.Clone(want.Params), want.Buffers...) {
		g := gs[i].Data()
		for j, v := range p.Data() {
			differ := math.Float32bits(g[j]) != math.Float32bits(v)
			if tol > 0 {
				differ = math.Abs(float64(g[j]-v)) > tol*(1+math.Abs(float64(v)))
			}
			if differ {
				t.Fatalf("%s[%d]: %s %v, %s %v", p.Name, j, gotName, g[j], wantName, v)
			}
		}
	}
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

// smallMobileNet is the MobileNet preset at width 0.25 on 8×8 images of 4
// classes: depthwise convolutions, ReLU6, inverted residuals.
func smallMobileNet(t testing.TB) graph.Network {
	t.Helper()
	net, err := graph.MobileNet(graph.Shape{H: 8, W: 8, C: 1}, 0.25, 4)
	if err != nil {
		t.Fatal(err)
	}
	return net
}

// resNetModel is the small ResNet as a model with its running statistics
// moved off their start (so that evaluation tests them).
func resNetModel(t testing.TB, seed uint64) *model.Model {
	t.Helper()
	return netModel(t, smallResNet(t), seed)
}

// netModel is net as a model, its running statistics moved likewise.
func netModel(t testing.TB, net graph.Network, seed uint64) *model.Model {
	t.Helper()
	m, err := model.FromNetwork(net, "kaiming", seed)
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
func trainResNet(t testing.TB, dev compute.Device, set *data.Set, batch, epochs int, compress ...Policy) *model.Model {
	t.Helper()
	return trainResNetModel(t, dev, resNetModel(t, 7), set, batch, epochs, compress...)
}

// trainResNetModel is trainResNet from m, with extra policies.
func trainResNetModel(t testing.TB, dev compute.Device, m *model.Model, set *data.Set, batch, epochs int, extra ...Policy) *model.Model {
	t.Helper()
	eng := cpu.New(cpu.Options{Threads: 2})
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
		Augment: data.Augment{Shift: 1, Flip: true}, Policies: append([]Policy{&LRPolicy{Schedule: schedule.LR{Kind: "cosine", Base: 0.1, Total: total}}}, extra...)})
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
	sameModels(t, devModel, cpuModel, 2e-5, "device", "CPU graph")
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
	sameModels(t, st, rf, 0, "strict", "reference")
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
	grouped := graph.NewChain(graph.Shape{H: 8, W: 8, C: 4}, 4).
		Add(graph.Layer{Name: "conv", Kind: graph.Conv, Kernel: 3, Out: 4, Groups: 2}).
		Add(graph.Layer{Name: "fc", Kind: graph.Linear, Out: 4})
	mm, err := model.FromNetwork(grouped.Net, "kaiming", 1)
	if err != nil {
		t.Fatal(err)
	}
	symmetric := resNetModel(t, 1)
	symmetric.ActQuant = map[string]*model.Observer{"block1.add": {Spec: model.QuantSpec{Bits: 8, Symmetric: true}}}
	for _, tc := range []struct {
		m     *model.Model
		field string
		what  string
	}{
		{mm, "model.arch", "no grouped convolutions but depthwise ones"},
		{symmetric, "quantize.activations", "symmetric or per-channel activation quantization"},
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

// quantizedResNet is the small ResNet set up as the compressed recipe's
// quantize block makes it (run/policies.go): 8-bit per-channel weights,
// every convolution with its batch norm folded in, 8-bit activations
// after each folded convolution's batch norm and each residual addition;
// and the policy that turns them on at sample on, freezes the observers
// at frozen and the batch norms at bnAt.
func quantizedResNet(t testing.TB, on, frozen, bnAt int64) (*model.Model, Policy) {
	m := resNetModel(t, 7)
	m.Quant, m.ActQuant, m.BN, m.Fold = map[string]*model.QuantControl{}, map[string]*model.Observer{}, &model.BNControl{}, map[string]string{}
	var layers, observed []string
	pairs := m.Net.FoldPairs()
	for _, w := range m.Weights() {
		m.Quant[w.Name] = &model.QuantControl{Spec: model.QuantSpec{Bits: 8, Symmetric: true, PerChannel: true}}
		layers = append(layers, w.Name)
		if bn, ok := pairs[w.Name]; ok {
			m.Fold[w.Name] = bn
			observed = append(observed, bn)
		}
	}
	for _, l := range m.Net.Layers {
		if l.Kind == graph.Add {
			observed = append(observed, l.Name)
		}
	}
	for _, l := range observed {
		m.ActQuant[l] = &model.Observer{Spec: model.QuantSpec{Bits: 8}, Momentum: 0.9}
	}
	return m, &QuantPolicy{Layers: layers, Steps: []QuantStep{{Start: on, Bits: 8}}, Observers: observed, FreezeAt: frozen, FreezeBNAt: bnAt}
}

// TestDeviceResNetQATMatchesGraph: quantization-aware training with batch
// norms folded and activation observers on the device agrees with the CPU
// graph's over two steps — the first initializing the observers with
// batch statistics, the second folding its range into theirs with the
// batch norms frozen. (Over more steps the two drift apart by whole
// quantization levels: a value within float32 rounding of a level's
// boundary lands on either side of it.)
func TestDeviceResNetQATMatchesGraph(t *testing.T) {
	dev := host.New(cpu.New(cpu.Options{Threads: 1}))
	defer dev.Close()
	set := randomImages(32, 4, 11)
	train := func(d compute.Device) *model.Model {
		m, p := quantizedResNet(t, 0, 1000, 16)
		return trainResNetModel(t, d, m, set, 16, 1, p)
	}
	cpuModel, devModel := train(nil), train(dev)
	sameModels(t, devModel, cpuModel, 1e-5, "device", "CPU graph")
	for name, o := range cpuModel.ActQuant {
		d := devModel.ActQuant[name]
		if !d.Initialized || math.Abs(float64(d.Min-o.Min)) > 1e-5 || math.Abs(float64(d.Max-o.Max)) > 1e-5*(1+float64(o.Max)) {
			t.Errorf("observer %s: device %+v, CPU graph %+v", name, *d, *o)
		}
	}
	if !devModel.BN.Frozen || !cpuModel.BN.Frozen {
		t.Error("batch norms not frozen")
	}
}

// TestStrictDeviceResNetQAT: the same compressed training, switched on
// and frozen mid-run, on the strict device is bit for bit the reference
// device's, observers included.
func TestStrictDeviceResNetQAT(t *testing.T) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	eng := cpu.New(cpu.Options{Threads: 2})
	strict, ref := host.NewStrict(eng), host.New(eng)
	defer strict.Close()
	defer ref.Close()
	set := randomImages(96, 4, 13)
	train := func(d compute.Device) *model.Model {
		m, p := quantizedResNet(t, 48, 144, 160)
		return trainResNetModel(t, d, m, set, 16, 2, p)
	}
	st, rf := train(strict), train(ref)
	sameModels(t, st, rf, 0, "strict", "reference")
	for name, o := range st.ActQuant {
		if r := rf.ActQuant[name]; *o != *r || !o.Frozen || !o.Initialized {
			t.Fatalf("observer %s: strict %+v, reference %+v", name, *o, *r)
		}
	}
}

// TestDeviceDepthwiseGradient: the gradients of a depthwise convolution
// (stride 2, padding) between ReLU6 layers against finite differences (a
// whole MobileNet's, batch norms over a few positions and ReLU6's two
// kinks, are too rough for them: TestDeviceMobileNetStepMatchesGraph
// checks those against the CPU graph).
func TestDeviceDepthwiseGradient(t *testing.T) {
	dev := host.New(cpu.New(cpu.Options{Threads: 1}))
	defer dev.Close()
	net := graph.NewChain(graph.Shape{H: 8, W: 8, C: 1}, 4).
		Add(graph.Layer{Name: "conv", Kind: graph.Conv, Kernel: 3, Pad: 1, Out: 4, Act: graph.ReLU6}).
		Add(graph.Layer{Name: "dw", Kind: graph.Conv, Kernel: 3, Stride: 2, Pad: 1, Out: 4, Groups: 4, Act: graph.ReLU6}).
		Add(graph.Layer{Name: "flat", Kind: graph.Flatten}).
		Add(graph.Layer{Name: "fc", Kind: graph.Linear, Out: 4})
	if err := net.Net.Validate(); err != nil {
		t.Fatal(err)
	}
	m, err := NewDeviceNet(dev, net.Net.Layers, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	// Biases off 0: with zero biases, outputs whose inputs are all zero sit
	// exactly on ReLU6's kink, where a central difference sees half a slope.
	r := rand.New(rand.NewPCG(8, 9))
	for _, p := range m.params {
		if p.Bias {
			b := make([]float32, p.n)
			for i := range b {
				b[i] = 0.05 + 0.1*r.Float32()
			}
			if err := dev.Upload(p.w, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	checkGradient(t, m, 4, 1e-3, 1)
}

// TestDeviceMobileNetStepMatchesGraph: two MobileNet training steps on the
// device agree with the CPU graph's, and the strict device's are the
// reference's bit for bit.
func TestDeviceMobileNetStepMatchesGraph(t *testing.T) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	eng := cpu.New(cpu.Options{Threads: 1})
	strict, ref := host.NewStrict(eng), host.New(eng)
	defer strict.Close()
	defer ref.Close()
	set := randomImages(32, 4, 11)
	train := func(d compute.Device) *model.Model {
		return trainResNetModel(t, d, netModel(t, smallMobileNet(t), 7), set, 16, 1)
	}
	cpuModel, devModel, strictModel := train(nil), train(ref), train(strict)
	sameModels(t, devModel, cpuModel, 2e-5, "device", "CPU graph")
	sameModels(t, strictModel, devModel, 0, "strict", "reference")
}

// poolNet pools with overlapping, padded windows: 3×3 max-pooling at
// stride 2 and 3×3 average pooling at stride 1.
func poolNet() graph.Network {
	return graph.NewChain(graph.Shape{H: 8, W: 8, C: 1}, 4).
		Add(graph.Layer{Name: "conv", Kind: graph.Conv, Kernel: 3, Pad: 1, Out: 3, Act: graph.ReLU}).
		Add(graph.Layer{Name: "max", Kind: graph.MaxPool, Kernel: 3, Stride: 2, Pad: 1}).
		Add(graph.Layer{Name: "avg", Kind: graph.AvgPool, Kernel: 3, Stride: 1, Pad: 1}).
		Add(graph.Layer{Name: "fc", Kind: graph.Linear, Out: 4}).Net
}

// TestDevicePoolingMatchesGraph: windows of any size, stride and padding
// — gradients against finite differences, two training steps against the
// CPU graph's.
func TestDevicePoolingMatchesGraph(t *testing.T) {
	net := poolNet()
	if err := net.Validate(); err != nil {
		t.Fatal(err)
	}
	dev := host.New(cpu.New(cpu.Options{Threads: 1}))
	defer dev.Close()
	m, err := NewDeviceNet(dev, net.Layers, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	checkGradient(t, m, 4, 1e-3, 1)
	set := randomImages(32, 4, 11)
	cpuModel := trainResNetModel(t, nil, netModel(t, net, 7), set, 16, 1)
	devModel := trainResNetModel(t, dev, netModel(t, net, 7), set, 16, 1)
	sameModels(t, devModel, cpuModel, 2e-5, "device", "CPU graph")
}

// TestCUDAResNetStepsMatchHost: two ResNet-8 training steps on the GPU,
// dense and with BN-folded QAT and observers, agree with the host
// reference device's (cuBLAS sums in its own order: float32 tolerances).
// Skipped without a GPU; fails with REQUIRE_GPU=1.
func TestCUDAResNetStepsMatchHost(t *testing.T) {
	gpu := enginetest.CUDA(t)
	ref := host.New(cpu.New(cpu.Options{Threads: 2}))
	defer ref.Close()
	set := randomImages(32, 4, 11)
	for _, quantized := range []bool{false, true} {
		train := func(d compute.Device) *model.Model {
			if !quantized {
				return trainResNet(t, d, set, 16, 1)
			}
			m, p := quantizedResNet(t, 0, 1000, 16)
			return trainResNetModel(t, d, m, set, 16, 1, p)
		}
		sameModels(t, train(gpu), train(ref), 1e-4, fmt.Sprintf("GPU (quantized %v)", quantized), "host")
	}
}
