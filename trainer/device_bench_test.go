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
	const batch, n = 1024, 8192
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
		for p := range m.w { // 8-bit weights, every other one pruned
			if err := m.SetLayerQuant(p, 8, false); err != nil {
				b.Fatal(err)
			}
			mask := make([]float32, m.wRows[p]*m.wCols[p])
			for i := range mask {
				mask[i] = float32(i % 2)
			}
			if err := dev.Upload(m.mask[p], mask); err != nil {
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
