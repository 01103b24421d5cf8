package infer

import (
	"bytes"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	G "gorgonia.org/gorgonia"

	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/internal/kernels"
	"github.com/lathe-ml/lathe/model"
)

// cnnKinds is a network with every kind the runtime runs beyond the zoo's:
// padded, strided, bias-free convolutions, batch norms, a depthwise and a
// grouped convolution, residual additions (ReLU6 after one, sigmoid after
// another, which a convolution finishing it must not drop), a convolution
// with SiLU, padded max and average pooling, global average pooling,
// flatten.
func cnnKinds() graph.Network {
	c := graph.NewChain(graph.Shape{H: 28, W: 28, C: 1}, 10)
	c.Add(graph.Layer{Name: "stem", Kind: graph.Conv, Out: 8, Kernel: 3, Stride: 2, Pad: 1, NoBias: true})
	c.Add(graph.Layer{Name: "stem.bn", Kind: graph.BatchNorm, Act: graph.ReLU})
	c.Add(graph.Layer{Name: "dw", Kind: graph.Conv, Out: 8, Kernel: 3, Pad: 1, Groups: 8, Act: graph.ReLU6})
	c.Add(graph.Layer{Name: "add1", Kind: graph.Add, Inputs: []string{"dw", "stem.bn"}, Act: graph.ReLU6})
	c.Add(graph.Layer{Name: "mp", Kind: graph.MaxPool, Kernel: 3, Stride: 2, Pad: 1})
	c.Add(graph.Layer{Name: "g", Kind: graph.Conv, Out: 12, Kernel: 1, Groups: 4})
	c.Add(graph.Layer{Name: "g.bn", Kind: graph.BatchNorm})
	c.Add(graph.Layer{Name: "ap", Kind: graph.AvgPool, Kernel: 3, Stride: 1, Pad: 1})
	c.Add(graph.Layer{Name: "s1", Kind: graph.Conv, Out: 12, Kernel: 3, Pad: 1, Act: graph.SiLU})
	c.Add(graph.Layer{Name: "s2", Kind: graph.Conv, Out: 12, Kernel: 3, Pad: 1})
	c.Add(graph.Layer{Name: "add2", Kind: graph.Add, Inputs: []string{"s2", "ap"}, Act: graph.Sigmoid})
	c.Add(graph.Layer{Name: "gap", Kind: graph.GlobalAvgPool})
	c.Add(graph.Layer{Name: "flat", Kind: graph.Flatten})
	c.Add(graph.Layer{Name: "fc", Kind: graph.Linear, Out: 10})
	return c.Net
}

// TestCNNKindsAgreeWithTheTrainingGraph: each new kind's runtime kernel
// computes what the training graph's evaluation pass does — batch norms
// folded from their running statistics (into the convolution before them
// where there is one), on ResNet-8 and on a network of
// every kind — logits within 1e-4 (relative), at batches of 1 and 5, with
// the kernels measurement chose and with every convolution forced to the
// patch matrix's GEMM and to the direct kernel.
func TestCNNKindsAgreeWithTheTrainingGraph(t *testing.T) {
	resnet, err := graph.ResNet(graph.Shape{H: 28, W: 28, C: 1}, 8, 10)
	if err != nil {
		t.Fatal(err)
	}
	for name, net := range map[string]graph.Network{"kinds": cnnKinds(), "resnet8": resnet} {
		t.Run(name, func(t *testing.T) {
			if err := net.Validate(); err != nil {
				t.Fatal(err)
			}
			gm, err := model.FromNetwork(net, "kaiming", 4)
			if err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(8, 8))
			for _, p := range append(gm.Params, gm.Buffers...) {
				if p.Norm { // batch norms away from the identity
					for i := range p.Data() {
						p.Data()[i] = float32(0.5 + r.Float64())
					}
				}
			}
			eng := cpu.New(cpu.Options{Threads: 2})
			m, err := Load(modelFile(t, gm, name), eng)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range m.Layers { // each folded into the convolution before it at load
				if l.Kind == string(graph.BatchNorm) && name == "resnet8" {
					t.Fatalf("batch norm %s runs as a pass of its own", l.Name)
				}
			}
			// The kernels measurement chose, then every convolution forced
			// to the patch matrix's GEMM and to the direct kernel.
			for _, kernel := range []string{"", Dense, Direct} {
				if kernel == Direct && !kernels.HasDirect() {
					continue
				}
				if kernel != "" {
					if err := m.Force(kernel); err != nil {
						t.Fatal(err)
					}
				}
				for _, batch := range []int{1, 5} {
					x := make([]float32, batch*784)
					for i := range x {
						x[i] = r.Float32()
					}
					want := evalLogits(t, gm, x, batch)
					got, err := m.Forward(x, batch)
					if err != nil {
						t.Fatal(err)
					}
					for i, w := range want {
						if math.Abs(float64(got[i]-w)) > 1e-4*max(1, math.Abs(float64(w))) {
							t.Fatalf("kernel %q, batch %d, logit %d: runtime %g, training graph %g", kernel, batch, i, got[i], w)
						}
					}
					// Direct kernels finish ResNet's residual additions.
					if name == "resnet8" && kernel == Direct && !slices.Contains(m.fused, true) {
						t.Fatal("no residual addition was fused into its convolution")
					}
				}
			}
		})
	}
}

// evalLogits runs x through the model's evaluation graph.
func evalLogits(t *testing.T, gm *model.Model, x []float32, batch int) []float32 {
	t.Helper()
	eng := cpu.New(cpu.Options{Threads: 2})
	net, err := gm.Build(eng, batch, false, 0, compress.Hooks())
	if err != nil {
		t.Fatal(err)
	}
	copy(net.XValue.Float32s(), x)
	vm := G.NewTapeMachine(net.Graph, G.WithEngine(eng))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), net.Logits.Value().Data().([]float32)...)
}

// TestCNNKindsExportToONNX: the ONNX export of ResNet-8 and of a network
// of every kind (batch norms as per-channel Mul and Add, ReLU6 as Clip,
// residual additions as Sum, padded and strided pooling and convolution,
// a depthwise and a grouped convolution) computes in onnxruntime what the
// runtime does: top-1 identical, logits within 1e-3, on 300 MNIST images.
func TestCNNKindsExportToONNX(t *testing.T) {
	resnet, err := graph.ResNet(graph.Shape{H: 28, W: 28, C: 1}, 8, 10)
	if err != nil {
		t.Fatal(err)
	}
	for name, net := range map[string]graph.Network{"kinds": cnnKinds(), "resnet8": resnet} {
		t.Run(name, func(t *testing.T) {
			gm, err := model.FromNetwork(net, "kaiming", 2)
			if err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(3, 3))
			for _, p := range append(gm.Params, gm.Buffers...) {
				if p.Norm {
					for i := range p.Data() {
						p.Data()[i] = float32(0.5 + r.Float64())
					}
				}
			}
			exportAndCompare(t, modelFile(t, gm, name), 300, []ONNXOptions{{}}, []int{17})
		})
	}
}

// TestFoldedQuantizedResNet: a ResNet-8 trained with its batch norms
// folded into 8-bit convolutions (weights per channel, activations after
// every folded batch norm and residual addition) is stored folded — no
// batch norm left, each convolution's codes those of W·γ/σ — and the
// runtime's integer kernels on that file compute what the training
// graph's evaluation pass (batch norms unfolded, weights and activations
// fake-quantized) does.
func TestFoldedQuantizedResNet(t *testing.T) {
	net, err := graph.ResNet(graph.Shape{H: 28, W: 28, C: 1}, 8, 10)
	if err != nil {
		t.Fatal(err)
	}
	gm, err := model.FromNetwork(net, "kaiming", 6)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(9, 9))
	for _, p := range append(gm.Params, gm.Buffers...) {
		if p.Norm {
			for i := range p.Data() {
				p.Data()[i] = float32(0.5 + r.Float64())
			}
		}
	}
	gm.Quant = map[string]*model.QuantControl{}
	for _, w := range gm.Weights() {
		gm.Quant[w.Name] = &model.QuantControl{Spec: model.QuantSpec{Bits: 8, Symmetric: true, PerChannel: true}, Enabled: true}
	}
	gm.Fold = net.FoldPairs()
	gm.BN = &model.BNControl{Frozen: true}
	gm.ActQuant = map[string]*model.Observer{}
	folded := slices.Collect(maps.Values(gm.Fold))
	for _, l := range net.Layers {
		if l.Kind == graph.Add || slices.Contains(folded, l.Name) {
			gm.ActQuant[l.Name] = &model.Observer{Spec: model.QuantSpec{Bits: 8}, Momentum: 0.9, Enabled: true}
		}
	}
	batch := 16
	x := make([]float32, batch*784)
	for i := range x {
		x[i] = r.Float32()
	}
	// One training pass (statistics frozen: as in evaluation) sets the
	// observers' ranges; then they freeze.
	eng := cpu.New(cpu.Options{Threads: 2})
	observeOnce(t, gm, eng, x, batch)
	f := modelFile(t, gm, "folded")
	m, err := Load(f, eng)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		if l.Kind == string(graph.BatchNorm) {
			t.Fatalf("batch norm %s left in the model file", l.Name)
		}
		if l.Kind == string(graph.Conv) && !slices.Contains(l.Candidates(), Int8) {
			t.Fatalf("convolution %s cannot run on integers", l.Name)
		}
	}
	// The stem's codes are those of its folded weight.
	s := make([]float32, 16)
	graph.BNScales(s, gm.Param("bn1").Data(), gm.Buffer("bn1.running_var").Data())
	wf := make([]float32, gm.Param("conv1").Size())
	kernels.ScaleRows(wf, gm.Param("conv1").Data(), s)
	qp := compress.ParamsFor(gm.Quant["conv1"].Spec, wf, 16)
	if got := f.Tensor("conv1").Quant; got == nil || !slices.Equal(got.Codes, qp.Quantize(wf)) {
		t.Fatal("the stem's codes are not its folded weight's")
	}
	want := evalLogits(t, gm, x, batch)
	got, err := m.Forward(x, batch)
	if err != nil {
		t.Fatal(err)
	}
	worst, scale := 0.0, 0.0
	for i, w := range want {
		worst = max(worst, math.Abs(float64(got[i]-w)))
		scale = max(scale, math.Abs(float64(w)))
	}
	t.Logf("largest logit difference %.3g (largest logit %.3g)", worst, scale)
	if worst > 5e-3*scale {
		t.Fatalf("runtime and training graph differ by %g (logits up to %g)", worst, scale)
	}
	// The float direct kernels on the dequantized weights, each residual
	// addition (its input's and its own quantization) finished in the
	// convolution's rows, compute the same.
	if kernels.HasDirect() {
		if err := m.Force(Direct); err != nil {
			t.Fatal(err)
		}
		got, err := m.Forward(x, batch)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(m.fused, true) {
			t.Fatal("no residual addition was fused into its convolution")
		}
		for i, w := range want {
			if d := math.Abs(float64(got[i] - w)); d > 5e-3*scale {
				t.Fatalf("direct kernels: logit %d differs by %g (logits up to %g)", i, d, scale)
			}
		}
	}
	directInt8MatchesInt8(t, m, x, batch)
	// Its ONNX export is the folded graph on integer codes, and computes the same.
	exportAndCompare(t, f, 300, []ONNXOptions{{}}, []int{17})
	// With codes whose sums could outgrow a float's integers (±127 over
	// 3·3·64 inputs), the last convolution is summed in int32 (ConvInteger).
	w := f.Tensor("block3.conv2")
	for i := range w.Quant.Codes {
		w.Quant.Codes[i] = 127 * int32(1-2*(i%3%2))
	}
	for i := range w.Quant.Scale {
		w.Quant.Scale[i] = 1e-5
	}
	var buf bytes.Buffer
	if _, err := ExportONNX(f, &buf, ONNXOptions{}); err != nil || !bytes.Contains(buf.Bytes(), []byte("ConvInteger")) {
		t.Fatalf("no ConvInteger for sums beyond a float's integers (%v)", err)
	}
	exportAndCompare(t, f, 300, []ONNXOptions{{}}, []int{17})
}

// directInt8MatchesInt8: the direct kernel on integer codes gives the
// int8 kernel's logits bit for bit (the same exact sums, scaled alike;
// residual additions finished in its rows), for one image and for a batch.
func directInt8MatchesInt8(t *testing.T, m *Model, x []float32, batch int) {
	t.Helper()
	if !hasVNNI {
		return
	}
	set := func(direct bool) {
		for _, l := range m.Layers {
			if l.k8 == nil {
				continue
			}
			for i := range l.Kernels {
				l.Kernels[i] = Int8
				if direct && l.direct8 != nil {
					l.Kernels[i] = DirectInt8
				}
			}
		}
	}
	n := 0
	for _, l := range m.Layers {
		if l.direct8 != nil {
			n++
		}
	}
	if n == 0 {
		t.Fatal("no convolution can run the direct integer kernel")
	}
	for _, b := range []int{1, batch} {
		set(false)
		want, err := m.Forward(x[:b*m.Features], b)
		if err != nil {
			t.Fatal(err)
		}
		want = slices.Clone(want)
		set(true)
		got, err := m.Forward(x[:b*m.Features], b)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("batch %d, logit %d: direct int8 %g, int8 %g (%d layers direct)", b, i, got[i], want[i], n)
			}
		}
	}
}

// TestLoadKeepsNoProbeScratch: the kernel probes at load run convolutions
// of up to 256 images; their scratch is not kept, so a model loaded and
// run at batch 1 holds its parameters and one image's buffers, not
// 256 images' patch rows.
func TestLoadKeepsNoProbeScratch(t *testing.T) {
	gm, err := model.New(model.Spec{Arch: "resnet", Depth: 8}, model.Input{Rows: 28, Cols: 28, Channels: 1, Classes: 10}, 1)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(modelFile(t, gm, "resnet8"), cpu.New(cpu.Options{Threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	params := 0
	for _, l := range m.Layers {
		params += l.Bytes()
	}
	if m.Bytes() != params {
		t.Fatalf("loaded: %d bytes held, %d of them parameters", m.Bytes(), params)
	}
	if _, err := m.Forward(make([]float32, m.Features), 1); err != nil {
		t.Fatal(err)
	}
	// One image's patch rows for the widest convolution: 28·28·9·16 floats.
	if grown := m.Bytes() - params; grown <= 0 || grown > 4*(28*28*9*16+8*28*28*16) {
		t.Fatalf("after a call at batch 1: %d bytes beyond the parameters", grown)
	}
}

// observeOnce runs one training pass of gm over x (batch samples), which
// sets its activation observers' ranges, and freezes them.
func observeOnce(t *testing.T, gm *model.Model, eng *cpu.Engine, x []float32, batch int) {
	t.Helper()
	tn, err := gm.Build(eng, batch, true, 1, compress.Hooks())
	if err != nil {
		t.Fatal(err)
	}
	copy(tn.XValue.Float32s(), x)
	vm := G.NewTapeMachine(tn.Graph, G.WithEngine(eng))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	for name, o := range gm.ActQuant {
		if !o.Initialized || !(o.Max > 0) {
			t.Fatalf("observer %s: %+v", name, o)
		}
		o.Frozen = true
	}
}
