package trainer

import (
	"context"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"testing"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/compute/enginetest"
	"github.com/lathe-ml/lathe/compute/host"
	"github.com/lathe-ml/lathe/data"
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

// lossAt is the network's mean loss on its current batch.
func lossAt(t *testing.T, m *DeviceNet, teacher compute.Buffer, T, alpha float32) float64 {
	t.Helper()
	m.quantize()
	m.dev.Fill(m.stats, 3, 0)
	logits := m.forward(m.x, m.batch, false, 0)
	m.dev.SoftmaxKD(nil, m.stats, logits, m.labels, teacher, m.batch, m.classes(), T, alpha, 0)
	st := make([]float32, 3)
	if err := m.dev.Download(st, m.stats); err != nil {
		t.Fatal(err)
	}
	return float64(st[0]) / float64(m.batch)
}

// checkGradient compares the device step's weight gradients with central
// finite differences of its own loss (with distillation on) on one
// random batch.
func checkGradient(t *testing.T, m *DeviceNet, classes int, h float32) {
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
	for l := range m.w {
		n := m.wRows[l] * m.wCols[l]
		w, g := make([]float32, n), make([]float32, n)
		if err := dev.Download(w, m.w[l]); err != nil {
			t.Fatal(err)
		}
		if err := dev.Download(g, m.gw[l]); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i += 3 {
			probe := func(v float32) float64 {
				w2 := append([]float32(nil), w...)
				w2[i] = v
				if err := dev.Upload(m.w[l], w2); err != nil {
					t.Fatal(err)
				}
				return lossAt(t, m, teacher, 2, 0.5)
			}
			num := (probe(w[i]+h) - probe(w[i]-h)) / float64((w[i]+h)-(w[i]-h))
			_ = dev.Upload(m.w[l], w)
			// float32 losses differenced over 2h: ~1e-7/h noise, and the ReLU
			// and max-pool kinks a step of h crosses; 2e-3 absolute is clear
			// of both at the h each test picks.
			if math.Abs(num-float64(g[i])) > 2e-3+1e-2*math.Abs(num) {
				t.Errorf("weight layer %d weight %d: gradient %v, finite difference %v", l, i, g[i], num)
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
	checkGradient(t, m, 4, 1e-2)
}

// TestDeviceConvGradient: the same through a convolution (im2col, the
// weight gradient, col2im), max-pooling and a second convolution.
func TestDeviceConvGradient(t *testing.T) {
	dev := host.New(cpu.New(cpu.Options{Threads: 1}))
	defer dev.Close()
	m, err := NewDeviceNet(dev, []DeviceLayer{
		{Kind: "conv", H: 8, W: 8, C: 2, K: 3, Out: 3, ReLU: true},
		{Kind: "maxpool", H: 6, W: 6, C: 3},
		{Kind: "conv", H: 3, W: 3, C: 3, K: 2, Out: 4, ReLU: true},
		{Kind: "linear", In: 16, Out: 4},
	}, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	// A convolution weight moves every pixel's pre-activation: a smaller
	// step crosses fewer kinks.
	checkGradient(t, m, 4, 1e-3)
}

type compressedRun struct {
	w, b [][]float32
	acc  float64
	eps  []DeviceEpoch
}

// runCompressed trains a teacher, then a student with AGP pruning, QAT and
// distillation from it, all on dev, and returns the student's weights.
func runCompressed(t testing.TB, dev compute.Device, train, test *DeviceData, sizes, teacherSizes []int, batch, epochs int) compressedRun {
	t.Helper()
	teacher, err := NewDeviceMLP(dev, teacherSizes, batch, 11)
	if err != nil {
		t.Fatal(err)
	}
	defer teacher.Free()
	if err := teacher.SetDropout(0.2, 0.5, 77); err != nil {
		t.Fatal(err)
	}
	if _, err := teacher.TrainDevice(context.Background(), train, DeviceRun{Epochs: epochs, LR: 0.05, Momentum: 0.9, WeightDecay: 1e-4, Seed: 2}); err != nil {
		t.Fatal(err)
	}
	m, err := NewDeviceMLP(dev, sizes, batch, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	eps, err := m.TrainDevice(context.Background(), train, DeviceRun{
		Epochs: epochs, LR: 0.05, Momentum: 0.9, WeightDecay: 1e-4, Cosine: true, Seed: 1,
		PruneTarget: 0.5, PruneFrom: 0, PruneTo: 0.75 * float64(epochs), PruneEvery: 0.25,
		QuantBits: 8, QuantFrom: 0.5 * float64(epochs),
		Teacher: teacher, Temperature: 2, Alpha: 0.5,
		Progress: func(e DeviceEpoch) {
			t.Logf("%s: epoch %d loss %.4f train acc %.4f sparsity %.3f %.0f samples/s", dev.Name(), e.Epoch, e.Loss, e.TrainAcc, e.Sparsity, e.SamplesPerSec)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var res compressedRun
	res.eps = eps
	if test != nil {
		if res.acc, _, err = m.Evaluate(test); err != nil {
			t.Fatal(err)
		}
	}
	if res.w, res.b, err = m.Weights(); err != nil {
		t.Fatal(err)
	}
	return res
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
	sizes, tsizes := []int{64, 32, 16, 10}, []int{64, 48, 10}
	st := runCompressed(t, strict, uploadRandom(t, strict, 512, 64, 10, 9), nil, sizes, tsizes, 32, 2)
	rf := runCompressed(t, ref, uploadRandom(t, ref, 512, 64, 10, 9), nil, sizes, tsizes, 32, 2)
	if strict.Kernels < 1000 {
		t.Fatalf("only %d strict device calls ran", strict.Kernels)
	}
	zeros, total := 0, 0
	for l := range st.w {
		for i := range st.w[l] {
			if math.Float32bits(st.w[l][i]) != math.Float32bits(rf.w[l][i]) {
				t.Fatalf("layer %d weight %d: strict %v, reference %v", l, i, st.w[l][i], rf.w[l][i])
			}
			if st.w[l][i] == 0 {
				zeros++
			}
			total++
		}
		for i := range st.b[l] {
			if math.Float32bits(st.b[l][i]) != math.Float32bits(rf.b[l][i]) {
				t.Fatalf("layer %d bias %d: strict %v, reference %v", l, i, st.b[l][i], rf.b[l][i])
			}
		}
	}
	if s := float64(zeros) / float64(total); s < 0.5 || s > 0.52 {
		t.Fatalf("sparsity %.3f after pruning to 0.5", s)
	}
	if last := st.eps[len(st.eps)-1]; !(last.Loss > 0) || last.Sparsity < 0.5 {
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
	dev := host.New(cpu.New(cpu.Options{}))
	defer dev.Close()
	tr, err := UploadSet(dev, train.Slice("train", 0, 12000))
	if err != nil {
		t.Fatal(err)
	}
	te, err := UploadSet(dev, test)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewDeviceMLP(dev, []int{784, 100, 10}, 64, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.TrainDevice(context.Background(), tr, DeviceRun{Epochs: 6, LR: 0.05, Momentum: 0.9, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	acc, loss, err := m.Evaluate(te)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("accuracy %.4f loss %.4f", acc, loss)
	if acc < 0.93 {
		t.Fatalf("test accuracy %.4f after 6 epochs on 12000 samples", acc)
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
		tr, err := UploadSet(dev, train)
		if err != nil {
			t.Fatal(err)
		}
		te, err := UploadSet(dev, test)
		if err != nil {
			t.Fatal(err)
		}
		res := runCompressed(t, dev, tr, te, []int{784, 300, 100, 10}, []int{784, 1200, 1200, 10}, 128, 1)
		accs[dev.Name()] = res.acc
		t.Logf("%s: test accuracy %.4f, %.0f samples/s (student epoch)", dev.Name(), res.acc, res.eps[0].SamplesPerSec)
		tr.Free(dev)
		te.Free(dev)
	}
	if d := math.Abs(accs[gpu.Name()] - accs[ref.Name()]); d > 0.002 {
		t.Fatalf("GPU accuracy %.4f vs CPU %.4f: %.2f pp apart", accs[gpu.Name()], accs[ref.Name()], 100*d)
	}
}
