package trainer

import (
	"context"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"testing"

	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/compute/enginetest"
	"github.com/lathe-ml/lathe/compute/host"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/distill"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/schedule"
)

func randomSet(r *rand.Rand, n, features, classes int) (x []float32, y []int32) {
	x = make([]float32, n*features)
	y = make([]int32, n)
	for i := range x {
		x[i] = r.Float32()
	}
	for i := range y {
		y[i] = int32(r.IntN(classes))
	}
	return x, y
}

func uploadRandom(t testing.TB, dev compute.Device, n, features, classes int, seed uint64) *DeviceData {
	t.Helper()
	x, y := randomSet(rand.New(rand.NewPCG(seed, 1)), n, features, classes)
	d := &DeviceData{N: n, Width: features}
	var err error
	if d.X, err = dev.Alloc(n * features); err != nil {
		t.Fatal(err)
	}
	if d.Y, err = dev.Alloc(n); err != nil {
		t.Fatal(err)
	}
	if err := dev.Upload(d.X, x); err != nil {
		t.Fatal(err)
	}
	if err := dev.UploadInt32(d.Y, y); err != nil {
		t.Fatal(err)
	}
	return d
}

// lossAt is the network's mean loss on its current batch, batch norms
// normalizing by the batch's statistics as in training.
func lossAt(t *testing.T, m *DeviceNet, teacher compute.Buffer, T, alpha float32) float64 {
	t.Helper()
	m.quantize()
	m.dev.Fill(m.stats, 3, 0)
	m.probe = true
	logits := m.forward(m.x, m.batch, true, 0)
	m.probe = false
	m.dev.SoftmaxKD(nil, m.stats, logits, m.labels, teacher, m.batch, m.classes(), T, alpha, 0)
	st := make([]float32, 3)
	if err := m.dev.Download(st, m.stats); err != nil {
		t.Fatal(err)
	}
	return float64(st[0]) / float64(m.batch)
}

// checkGradient compares the device step's parameter gradients with
// central finite differences of its own loss (with distillation on) on one
// random batch, probing every stride-th element of each parameter.
func checkGradient(t *testing.T, m *DeviceNet, classes int, h float32, stride int) {
	t.Helper()
	dev := m.dev
	r := rand.New(rand.NewPCG(5, 6))
	x, y := randomSet(r, m.batch, m.in, classes)
	if err := dev.Upload(m.x, x); err != nil {
		t.Fatal(err)
	}
	if err := dev.UploadInt32(m.labels, y); err != nil {
		t.Fatal(err)
	}
	teacher, _ := dev.Alloc(m.batch * classes)
	tl, _ := randomSet(r, m.batch, classes, 1)
	_ = dev.Upload(teacher, tl)
	// A step with learning rate 0 computes the gradients and changes nothing.
	m.step(DeviceStep{Teacher: teacher, T: 2, Alpha: 0.5})
	for _, p := range m.params {
		w, g := make([]float32, p.n), make([]float32, p.n)
		if err := dev.Download(w, p.w); err != nil {
			t.Fatal(err)
		}
		if err := dev.Download(g, p.g); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < p.n; i += stride {
			probe := func(v float32) float64 {
				w2 := append([]float32(nil), w...)
				w2[i] = v
				if err := dev.Upload(p.w, w2); err != nil {
					t.Fatal(err)
				}
				return lossAt(t, m, teacher, 2, 0.5)
			}
			num := (probe(w[i]+h) - probe(w[i]-h)) / float64((w[i]+h)-(w[i]-h))
			_ = dev.Upload(p.w, w)
			// float32 losses differenced over 2h: ~1e-7/h noise, and the ReLU
			// and max-pool kinks a step of h crosses; 2e-3 absolute is clear
			// of both at the h each test picks.
			if math.Abs(num-float64(g[i])) > 2e-3+1e-2*math.Abs(num) {
				t.Errorf("%s element %d: gradient %v, finite difference %v", p.Name, i, g[i], num)
			}
		}
	}
}

func TestDeviceMLPGradient(t *testing.T) {
	dev := host.New(cpu.New(cpu.Options{Threads: 1}))
	defer dev.Close()
	m, err := NewDeviceMLP(dev, []int{6, 5, 4}, 3, 3)
	if err != nil {
		t.Fatal(err)
	}
	checkGradient(t, m, 4, 1e-2, 3)
}

// TestDeviceConvGradient: the same through a convolution (im2col, the
// weight gradient, col2im), max-pooling and a second convolution.
func TestDeviceConvGradient(t *testing.T) {
	dev := host.New(cpu.New(cpu.Options{Threads: 1}))
	defer dev.Close()
	net := graph.NewChain(graph.Shape{H: 8, W: 8, C: 2}, 4).
		Add(graph.Layer{Name: "conv1", Kind: graph.Conv, Kernel: 3, Out: 3, Act: graph.ReLU}).
		Add(graph.Layer{Name: "pool1", Kind: graph.MaxPool}).
		Add(graph.Layer{Name: "conv2", Kind: graph.Conv, Kernel: 2, Out: 4, Act: graph.ReLU}).
		Add(graph.Layer{Name: "fc", Kind: graph.Linear, Out: 4, Act: graph.Identity})
	m, err := NewDeviceNet(dev, net.Net.Layers, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	// A convolution weight moves every pixel's pre-activation: a smaller
	// step crosses fewer kinks.
	checkGradient(t, m, 4, 1e-3, 3)
}

type compressedRun struct {
	w   [][]float32 // the student's parameters, in Model.Params order
	acc float64
	res *Result
}

// randomImages is a set of n random 8×8 images of the given classes.
func randomImages(n, classes int, seed uint64) *data.Set {
	r := rand.New(rand.NewPCG(seed, 1))
	s := &data.Set{Name: "random", Rows: 8, Cols: 8, Classes: classes, Images: make([]byte, n*64), Labels: make([]byte, n)}
	for i := range s.Images {
		s.Images[i] = byte(r.IntN(256))
	}
	for i := range s.Labels {
		s.Labels[i] = byte(r.IntN(classes))
	}
	return s
}

// runCompressed trains a teacher, then a student with AGP pruning, QAT and
// distillation from it, all on dev through the trainer's one loop, and
// returns the student's weights.
func runCompressed(t testing.TB, dev compute.Device, train, test *data.Set, hidden, teacherHidden []int, batch, epochs int) compressedRun {
	t.Helper()
	eng := cpu.New(cpu.Options{Threads: 1})
	in := model.Input{Rows: train.Rows, Cols: train.Cols, Channels: 1, Classes: train.Classes}
	steps := int64(data.Steps(train.Len(), batch))
	epochSamples := steps * int64(batch)
	sgd := func() Optimizer {
		o, err := NewOptimizer(OptimConfig{Kind: "sgd", Momentum: 0.9, WeightDecay: 1e-4}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	teacher, err := model.New(model.Spec{Arch: "mlp", Hidden: teacherHidden, Dropout: 0.5, InputDropout: 0.2}, in, 11)
	if err != nil {
		t.Fatal(err)
	}
	tt, err := New(Config{Model: teacher, Engine: eng, Device: dev, Train: train, Batch: batch, Epochs: epochs, Seed: 2, Optimizer: sgd(),
		Policies: []Policy{&LRPolicy{Schedule: schedule.LR{Kind: "constant", Base: 0.05}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer tt.Close()
	if _, err := tt.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Spec{Arch: "mlp", Hidden: hidden}, in, 1)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	m.Quant = map[string]*model.QuantControl{}
	for _, w := range m.Weights() {
		names = append(names, w.Name)
		m.Quant[w.Name] = &model.QuantControl{Spec: model.QuantSpec{Bits: 8, Symmetric: true, PerChannel: true}}
	}
	total := epochSamples * int64(epochs)
	policies := []Policy{
		&LRPolicy{Schedule: schedule.LR{Kind: "cosine", Base: 0.05, Total: total}},
		&PrunePolicy{Label: "agp", Layers: names, Granularity: compress.Element, Global: true,
			Schedule: schedule.Sparsity{Kind: "agp", Final: 0.5, Start: 0, End: 3 * total / 4, Every: epochSamples / 4}},
		&QuantPolicy{Layers: names, Steps: []QuantStep{{Start: total / 2, Bits: 8}}},
	}
	st, err := New(Config{Model: m, Engine: eng, Device: dev, Train: train, Test: test, Batch: batch, Epochs: epochs, Seed: 1, Optimizer: sgd(),
		Policies: policies, Teachers: []*model.Model{tt.Model()}, KD: &distill.Config{Temperature: 2, Alpha: 0.5}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	res, err := st.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range res.Epochs {
		t.Logf("%s: epoch %d loss %.4f train acc %.4f sparsity %.3f %.0f samples/s", dev.Name(), e.Epoch, e.TrainLoss, e.TrainAccuracy, e.Sparsity, e.SamplesPerSec)
	}
	out := compressedRun{res: res, acc: res.TestAccuracy}
	for _, p := range m.Params {
		out.w = append(out.w, p.Data())
	}
	return out
}

// TestStrictDeviceTrainingStep runs whole compressed training steps —
// gathering batches, a distillation teacher's forward pass, AGP pruning
// with device-side threshold search, per-row fake quantization, the KD
// loss, backward, masked momentum updates — on the strict device, whose
// memory faults when the host touches it outside the device's own calls,
// and checks the result is bit for bit the reference device's. This is the
// proof, without a GPU, that the device path reads nothing from the host.
func TestStrictDeviceTrainingStep(t *testing.T) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	eng := cpu.New(cpu.Options{Threads: 2})
	strict, ref := host.NewStrict(eng), host.New(eng)
	defer strict.Close()
	defer ref.Close()
	st := runCompressed(t, strict, randomImages(512, 10, 9), nil, []int{32, 16}, []int{48}, 32, 2)
	rf := runCompressed(t, ref, randomImages(512, 10, 9), nil, []int{32, 16}, []int{48}, 32, 2)
	if strict.Kernels < 1000 {
		t.Fatalf("only %d strict device calls ran", strict.Kernels)
	}
	for l := range st.w {
		for i := range st.w[l] {
			if math.Float32bits(st.w[l][i]) != math.Float32bits(rf.w[l][i]) {
				t.Fatalf("parameter %d element %d: strict %v, reference %v", l, i, st.w[l][i], rf.w[l][i])
			}
		}
	}
	last := st.res.Epochs[len(st.res.Epochs)-1]
	if math.Abs(last.Sparsity-0.5) > 0.01 || last.WeightBits != 8 || !(last.TrainLoss > 0) || !(last.DistillLoss > 0) {
		t.Fatalf("last epoch %+v", last)
	}
}

// TestDeviceMLPLearnsMNIST trains a small MLP on part of real MNIST on the
// host device: the device path learns.
func TestDeviceMLPLearnsMNIST(t *testing.T) {
	train, test, err := data.Load("mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	eng := cpu.New(cpu.Options{})
	dev := host.New(eng)
	defer dev.Close()
	m, err := model.New(model.Spec{Arch: "mlp", Hidden: []int{100}}, model.MNISTInput, 1)
	if err != nil {
		t.Fatal(err)
	}
	opt, err := NewOptimizer(OptimConfig{Kind: "sgd", Momentum: 0.9}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := New(Config{Model: m, Engine: eng, Device: dev, Train: train.Slice("train", 0, 12000), Test: test, Batch: 64, Epochs: 6, Seed: 1,
		Optimizer: opt, Policies: []Policy{&LRPolicy{Schedule: schedule.LR{Kind: "constant", Base: 0.05}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	res, err := tr.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("accuracy %.4f loss %.4f", res.TestAccuracy, res.TestLoss)
	if res.TestAccuracy < 0.93 {
		t.Fatalf("test accuracy %.4f after 6 epochs on 12000 samples", res.TestAccuracy)
	}
}

// TestCUDAEpochMatchesCPU trains LeNet-300-100 for one epoch on MNIST with
// the flagship recipe's compression policies (a teacher first, then AGP
// pruning, 8-bit per-channel QAT and distillation) on the GPU and on the
// CPU, and checks test accuracy agrees within 0.2 percentage points.
// Skipped without a GPU; fails with REQUIRE_GPU=1.
func TestCUDAEpochMatchesCPU(t *testing.T) {
	gpu := enginetest.CUDA(t)
	train, test, err := data.Load("mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	ref := host.New(cpu.New(cpu.Options{}))
	defer ref.Close()
	accs := map[string]float64{}
	for _, dev := range []compute.Device{gpu, ref} {
		res := runCompressed(t, dev, train, test, []int{300, 100}, []int{1200, 1200}, 128, 1)
		accs[dev.Name()] = res.acc
		t.Logf("%s: test accuracy %.4f, %.0f samples/s (student epoch)", dev.Name(), res.acc, res.res.Epochs[0].SamplesPerSec)
	}
	if d := math.Abs(accs[gpu.Name()] - accs[ref.Name()]); d > 0.002 {
		t.Fatalf("GPU accuracy %.4f vs CPU %.4f: %.2f pp apart", accs[gpu.Name()], accs[ref.Name()], 100*d)
	}
}
