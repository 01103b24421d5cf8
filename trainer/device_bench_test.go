package trainer

import (
	"testing"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/compute/enginetest"
	"github.com/lathe-ml/lathe/compute/host"
	"github.com/lathe-ml/lathe/graph"
)

// benchmarkDeviceStep times training steps at batch 1024 on a resident
// data set (a gathered batch, forward, loss, backward, momentum update),
// reporting samples/s; compressed adds 8-bit QAT, a pruning mask and
// distillation from a 784-1200-1200-10 teacher (its forward pass counted).
func benchmarkDeviceStep(b *testing.B, dev compute.Device, sizes []int, compressed bool) {
	benchmarkDeviceNet(b, dev, MLPLayers(sizes, 0), compressed)
}

// lenet5Layers is LeNet-5 as lathe's model zoo builds it (20 and 50 5×5
// filters, 2×2 max-pooling, 500 hidden units).
var lenet5Layers = graph.LeNet5(graph.Shape{H: 28, W: 28, C: 1}, [2]int{20, 50}, 500, 10, 0).Layers

func benchmarkDeviceNet(b *testing.B, dev compute.Device, layers []graph.Layer, compressed bool) {
	benchmarkDeviceBatch(b, dev, layers, compressed, 1024)
}

// benchmarkDeviceBatch times training steps of batch samples drawn from a
// resident random set of 8192.
func benchmarkDeviceBatch(b *testing.B, dev compute.Device, layers []graph.Layer, compressed bool, batch int) {
	const n = 8192
	in, classes := layers[0].In.Size(), layers[len(layers)-1].Out
	train := uploadRandom(b, dev, n, in, classes, 1)
	defer train.Free(dev)
	m, err := NewDeviceNet(dev, layers, batch, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Free()
	idx, err := dev.Alloc(n)
	if err != nil {
		b.Fatal(err)
	}
	defer dev.Free(idx)
	seq := make([]int32, n)
	for i := range seq {
		seq[i] = int32((i * 7919) % n)
	}
	if err := dev.UploadInt32(idx, seq); err != nil {
		b.Fatal(err)
	}
	st := DeviceStep{LR: 0.01, Momentum: 0.9, WeightDecay: 1e-4}
	var teacher *DeviceNet
	if compressed {
		if teacher, err = NewDeviceMLP(dev, []int{in, 1200, 1200, classes}, batch, 2); err != nil {
			b.Fatal(err)
		}
		defer teacher.Free()
		for _, p := range m.params { // 8-bit weights, every other one pruned
			if !quantizable(p.Param) {
				continue
			}
			if err := m.SetQuant(p.Name, 8, false); err != nil {
				b.Fatal(err)
			}
			mask := make([]float32, p.n)
			for i := range mask {
				mask[i] = float32(i % 2)
			}
			if err := dev.Upload(p.mask, mask); err != nil {
				b.Fatal(err)
			}
		}
		st.T, st.Alpha = 2, 0.5
	}
	one := func(i int) {
		s := i % (n / batch)
		dev.GatherRows(m.x, train.X, idx, s*batch, batch, train.Width)
		dev.GatherRows(m.labels, train.Y, idx, s*batch, batch, 1)
		if teacher != nil {
			st.Teacher = teacher.forward(m.x, batch, false, 0)
		}
		m.step(st)
	}
	for i := 0; i < 3; i++ { // warm-up: kernel loads, allocator, clocks
		one(i)
	}
	if err := dev.Sync(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		one(i)
	}
	if err := dev.Sync(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "samples/s")
}

var (
	lenet300 = []int{784, 300, 100, 10}
	wideMLP  = []int{784, 4096, 4096, 10}
)

func BenchmarkDeviceStepCPULeNet300(b *testing.B) {
	benchmarkDeviceStep(b, host.New(cpu.New(cpu.Options{})), lenet300, false)
}
func BenchmarkDeviceStepCUDALeNet300(b *testing.B) {
	benchmarkDeviceStep(b, enginetest.CUDA(b), lenet300, false)
}
func BenchmarkDeviceStepCUDALeNet300Compressed(b *testing.B) {
	benchmarkDeviceStep(b, enginetest.CUDA(b), lenet300, true)
}
func BenchmarkDeviceStepCUDAWide(b *testing.B) {
	benchmarkDeviceStep(b, enginetest.CUDA(b), wideMLP, false)
}
func BenchmarkDeviceStepCUDALeNet5(b *testing.B) {
	benchmarkDeviceNet(b, enginetest.CUDA(b), lenet5Layers, false)
}

// resnet20Layers is the ResNet-20 preset on 28×28 images (the anchor's
// resnet20_train_b128, and bench/gpu/torch_mlp.py resnet20).
func resnet20Layers(b *testing.B) []graph.Layer {
	net, err := graph.ResNet(graph.Shape{H: 28, W: 28, C: 1}, 20, 10)
	if err != nil {
		b.Fatal(err)
	}
	return net.Layers
}

func BenchmarkDeviceStepCUDAResNet20(b *testing.B) {
	benchmarkDeviceBatch(b, enginetest.CUDA(b), resnet20Layers(b), false, 128)
}

func BenchmarkDeviceStepCPUResNet20(b *testing.B) {
	benchmarkDeviceBatch(b, host.New(cpu.New(cpu.Options{})), resnet20Layers(b), false, 128)
}
