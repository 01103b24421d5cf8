package graph

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestPresetsDescribeTheZoo(t *testing.T) {
	in := Shape{H: 28, W: 28, C: 1}
	for _, tc := range []struct {
		name   string
		net    Network
		params int64
		shapes [][]int // the weights'
	}{
		{"lenet300", MLP(in, []int{300, 100}, 10, 0), 266610, [][]int{{300, 784}, {100, 300}, {10, 100}}},
		{"teacher", MLP(in, []int{1200, 1200}, 10, 0.5), 2395210, [][]int{{1200, 784}, {1200, 1200}, {10, 1200}}},
		{"lenet5", LeNet5(in, [2]int{20, 50}, 500, 10, 0), 431080, [][]int{{20, 5, 5, 1}, {50, 5, 5, 20}, {500, 800}, {10, 500}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.net.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := tc.net.NumParams(); got != tc.params {
				t.Fatalf("%d parameters, want %d", got, tc.params)
			}
			var shapes [][]int
			for _, p := range tc.net.Params() {
				if !p.Bias {
					shapes = append(shapes, p.Shape)
				}
			}
			if !slices.EqualFunc(shapes, tc.shapes, slices.Equal[[]int]) {
				t.Fatalf("weights %v, want %v", shapes, tc.shapes)
			}
		})
	}
}

func TestFactorizeReplacesALayerByTwo(t *testing.T) {
	n := MLP(Shape{H: 1, W: 1, C: 784}, []int{300, 100}, 10, 0.25)
	f, err := Factorize(n, "fc1", 32)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range f.Layers {
		names = append(names, l.Name)
	}
	if strings.Join(names, " ") != "fc1.v fc1.u fc2 fc3" || f.Layers[0].Act != Identity || f.Layers[1].Act != ReLU || f.Layers[1].Dropout != 0.25 {
		t.Fatalf("%+v", f.Layers)
	}
	if n.Layers[0].Name != "fc1" {
		t.Fatal("Factorize changed its argument")
	}
	if f.NumParams() != 784*32+32+32*300+300+300*100+100+100*10+10 {
		t.Fatalf("%d parameters", f.NumParams())
	}
	if _, err := Factorize(n, "fc9", 4); err == nil {
		t.Fatal("a missing layer factorized")
	}
	if _, err := Factorize(LeNet5(Shape{H: 28, W: 28, C: 1}, [2]int{20, 50}, 500, 10, 0), "conv1", 4); err == nil {
		t.Fatal("a convolution factorized")
	}
}

func TestValidateFindsMismatches(t *testing.T) {
	n := MLP(Shape{H: 1, W: 1, C: 8}, []int{4}, 3, 0)
	n.Layers[1].In = Shape{H: 1, W: 1, C: 5}
	if err := n.Validate(); err == nil || !strings.Contains(err.Error(), "fc2 receives") {
		t.Fatalf("%v", err)
	}
	n = MLP(Shape{H: 1, W: 1, C: 8}, []int{4}, 3, 0)
	n.Classes = 7
	if err := n.Validate(); err == nil || !strings.Contains(err.Error(), "for 7 classes") {
		t.Fatalf("%v", err)
	}
	small := LeNet5(Shape{H: 8, W: 8, C: 1}, [2]int{2, 2}, 4, 2, 0)
	if err := small.Validate(); err == nil || !strings.Contains(err.Error(), "conv2 produces") {
		t.Fatalf("%v", err)
	}
}

// TestTableRoundTripsAndReadsFormat1: a network goes into a model file's
// table and comes back the same (without dropout); format 1's forward list
// of the same network resolves to it too.
func TestTableRoundTripsAndReadsFormat1(t *testing.T) {
	in := Shape{H: 28, W: 28, C: 1}
	n := LeNet5(in, [2]int{20, 50}, 500, 10, 0.3)
	b, err := json.Marshal(NewTable(n))
	if err != nil {
		t.Fatal(err)
	}
	var back Table
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	got, err := back.Resolve(in, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := LeNet5(in, [2]int{20, 50}, 500, 10, 0)
	if !reflect.DeepEqual(got, want) || back.Format != TableFormat {
		t.Fatalf("%s\n%+v", b, got)
	}
	old := Table{Layers: []LegacyLayer{
		{Name: "conv1", Kind: "conv", Act: "relu", Out: 20, K: 5, InShape: []int{28, 28, 1}},
		{Name: "conv1.pool", Kind: "maxpool", Act: "identity", InShape: []int{24, 24, 20}},
		{Name: "conv2", Kind: "conv", Act: "relu", Out: 50, K: 5, InShape: []int{12, 12, 20}},
		{Name: "conv2.pool", Kind: "maxpool", Act: "identity", InShape: []int{8, 8, 50}},
		{Name: "fc1", Kind: "linear", Act: "relu", In: 800, Out: 500},
		{Name: "fc2", Kind: "linear", Act: "identity", In: 500, Out: 10},
	}}
	if got, err := old.Resolve(in, 10); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("format 1: %v\n%+v", err, got)
	}
	old.Layers[4].In = 799
	if _, err := old.Resolve(in, 10); err == nil || !strings.Contains(err.Error(), "fc1 takes 799 inputs, 800 come in") {
		t.Fatalf("a list that does not chain: %v", err)
	}
}

// TestResNetMatchesTheAnchor: ResNet-8 and ResNet-20 have the PyTorch
// anchor's parameter counts (torch_anchor.py's ResNet(n): 77,754 and
// 272,186), its shapes and its residual structure.
func TestResNetMatchesTheAnchor(t *testing.T) {
	in := Shape{H: 28, W: 28, C: 1}
	for _, tc := range []struct {
		depth  int
		params int64
	}{{8, 77754}, {20, 272186}} {
		n, err := ResNet(in, tc.depth, 10)
		if err != nil {
			t.Fatal(err)
		}
		if got := n.NumParams(); got != tc.params {
			t.Fatalf("ResNet-%d: %d parameters, want %d", tc.depth, got, tc.params)
		}
		adds, shortcuts := 0, 0
		for _, l := range n.Layers {
			if l.Kind == Add {
				adds++
			}
			if strings.HasSuffix(l.Name, ".sc") {
				shortcuts++
				if l.Kernel != 1 || l.Stride != 2 || !l.NoBias {
					t.Fatalf("shortcut %+v", l)
				}
			}
		}
		if blocks := (tc.depth - 2) / 6 * 3; adds != blocks || shortcuts != 2 {
			t.Fatalf("ResNet-%d: %d additions, %d projection shortcuts", tc.depth, adds, shortcuts)
		}
		if pool := n.Layer("pool"); pool.In != (Shape{H: 7, W: 7, C: 64}) {
			t.Fatalf("global pooling receives %v", pool.In)
		}
		if err := n.Basic(); err == nil || !strings.Contains(err.Error(), "conv1") {
			t.Fatalf("Basic: %v", err)
		}
	}
	if _, err := ResNet(in, 21, 10); err == nil || !strings.Contains(err.Error(), "6n+2") {
		t.Fatalf("depth 21: %v", err)
	}
}

func TestMobileNetBlocks(t *testing.T) {
	in := Shape{H: 28, W: 28, C: 1}
	n, err := MobileNet(in, 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	var adds []string
	for _, l := range n.Layers {
		if l.Kind == Add {
			adds = append(adds, l.Name)
		}
		if strings.HasSuffix(l.Name, ".dw") && (l.GroupCount() != l.In.C || l.Out != l.In.C || n.Layer(l.Name).Params()[0].Shape[3] != 1) {
			t.Fatalf("depthwise %+v", l)
		}
	}
	if strings.Join(adds, " ") != "block1.add block3.add block5.add block7.add" {
		t.Fatalf("residual additions %v", adds)
	}
	if head := n.Layer("head"); head.In != (Shape{H: 4, W: 4, C: 64}) || head.Out != 256 {
		t.Fatalf("head %+v", head)
	}
	half, err := MobileNet(in, 0.5, 10)
	if err != nil {
		t.Fatal(err)
	}
	if h := half.Layer("head"); h.In.C != 32 || h.Out != 128 || half.Layer("block2.project").Out != 16 {
		t.Fatalf("width 0.5: head %+v, block2.project %d", h, half.Layer("block2.project").Out)
	}
	if n.MACs() <= half.MACs() || half.MACs() <= 0 {
		t.Fatalf("MACs %d (width 1) and %d (width 0.5)", n.MACs(), half.MACs())
	}
}

// TestMACs counts by hand: a padded 3×3 conv of 28×28×1 to 16 filters
// makes 28·28·16·9 multiply-accumulates per sample; depthwise, each filter
// sees one channel; a batch norm folds away.
func TestMACs(t *testing.T) {
	c := NewChain(Shape{H: 28, W: 28, C: 1}, 10)
	c.Add(Layer{Name: "conv", Kind: Conv, Out: 16, Kernel: 3, Pad: 1})
	c.Add(Layer{Name: "bn", Kind: BatchNorm})
	c.Add(Layer{Name: "dw", Kind: Conv, Out: 16, Kernel: 3, Stride: 2, Pad: 1, Groups: 16})
	c.Add(Layer{Name: "fc", Kind: Linear, Out: 10})
	n := c.Net
	if err := n.Validate(); err != nil {
		t.Fatal(err)
	}
	want := []int64{28 * 28 * 16 * 9, 0, 14 * 14 * 16 * 9, 14 * 14 * 16 * 10}
	for i, l := range n.Layers {
		if l.MACs() != want[i] {
			t.Fatalf("%s: %d MACs, want %d", l.Name, l.MACs(), want[i])
		}
	}
	if n.MACs() != want[0]+want[2]+want[3] {
		t.Fatalf("total %d", n.MACs())
	}
}

// TestValidateNamesTheLayer: shape and wiring mistakes are refused naming
// the layer at fault.
func TestValidateNamesTheLayer(t *testing.T) {
	in := Shape{H: 8, W: 8, C: 3}
	base := func() *Chain {
		c := NewChain(in, 4)
		c.Add(Layer{Name: "a", Kind: Conv, Out: 8, Kernel: 3, Pad: 1})
		c.Add(Layer{Name: "b", Kind: Conv, Out: 8, Kernel: 3, Stride: 2, Pad: 1})
		return c
	}
	for _, tc := range []struct {
		name string
		edit func(n *Network)
		want string
	}{
		{"residual of mismatched shapes", func(n *Network) {
			n.Layers = append(n.Layers, Layer{Name: "sum", Kind: Add, Inputs: []string{"a", "b"}, In: Shape{H: 8, W: 8, C: 8}, Act: Identity})
		}, "layer sum receives {8 8 8}, but {4 4 8} comes in from b"},
		{"wrong channel count", func(n *Network) { n.Layers[1].In.C = 4 }, "layer b receives {8 8 4}, but {8 8 8} comes in"},
		{"input from a later layer", func(n *Network) { n.Layers[0].Inputs = []string{"b"} }, `layer a takes "b", which no layer before it produces`},
		{"name twice", func(n *Network) { n.Layers[1].Name = "a" }, `layer name "a"`},
		{"groups", func(n *Network) { n.Layers[1].Groups = 3 }, "layer b: 3 groups do not divide its 8 input channels"},
		{"padding", func(n *Network) { n.Layers[1].Pad = 3 }, "layer b has kernel 3, stride 2, padding 3"},
		{"one input to add", func(n *Network) {
			n.Layers = append(n.Layers, Layer{Name: "sum", Kind: Add, In: Shape{H: 4, W: 4, C: 8}, Act: Identity})
		}, "layer sum (add) takes 1 inputs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			c.Add(Layer{Name: "pool", Kind: GlobalAvgPool})
			c.Add(Layer{Name: "fc", Kind: Linear, Out: 4})
			n := c.Net.Clone()
			if err := n.Validate(); err != nil {
				t.Fatalf("the base network: %v", err)
			}
			tail := slices.Clone(n.Layers[2:])
			n.Layers = n.Layers[:2]
			tc.edit(&n)
			n.Layers = append(n.Layers, tail...)
			if err := n.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestTableHoldsAResNet: the model file's layer table stores a DAG with
// every new attribute and reads it back equal.
func TestTableHoldsAResNet(t *testing.T) {
	n, err := ResNet(Shape{H: 28, W: 28, C: 1}, 8, 10)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(NewTable(n))
	if err != nil {
		t.Fatal(err)
	}
	var tb Table
	if err := json.Unmarshal(b, &tb); err != nil {
		t.Fatal(err)
	}
	back, err := tb.Resolve(n.Input, n.Classes)
	if err != nil || !reflect.DeepEqual(back, n) {
		t.Fatalf("read back %v:\n%+v\n%+v", err, back, n)
	}
}

// TestChannelGroupsFollowResiduals: in ResNet-8 the stem's filters, the
// first block's second convolution and the addition that joins them are
// one group with their batch norms and every reader (the next block's
// convolution and shortcut); a block's inner channels are a group of their
// own; the input's and the classes' channels cannot be pruned.
func TestChannelGroupsFollowResiduals(t *testing.T) {
	n, err := ResNet(Shape{H: 28, W: 28, C: 1}, 8, 10)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := n.ChannelGroups()
	if err != nil {
		t.Fatal(err)
	}
	find := func(param, role string) *ChannelGroup {
		for i, g := range groups {
			for _, m := range g.Members {
				if m.Param == param && m.Role == role {
					return &groups[i]
				}
			}
		}
		t.Fatalf("no group has %s as %s", param, role)
		return nil
	}
	names := func(g *ChannelGroup) string {
		var out []string
		for _, m := range g.Members {
			out = append(out, m.String())
		}
		return strings.Join(out, " ")
	}
	stem := find("conv1", "out")
	want := "conv1/out[0] block1.conv2/out[0] bn1/pass[0] bn1.bias/pass[0] bn1.running_mean/pass[0] bn1.running_var/pass[0] " +
		"block1.bn2/pass[0] block1.bn2.bias/pass[0] block1.bn2.running_mean/pass[0] block1.bn2.running_var/pass[0] " +
		"block1.conv1/in[3] block2.conv1/in[3] block2.sc/in[3]"
	if got := names(stem); got != want || !stem.Prunable || stem.Size != 16 {
		t.Fatalf("the stem's group (size %d, prunable %v):\n%s\nwant\n%s", stem.Size, stem.Prunable, got, want)
	}
	inner := find("block2.conv1", "out")
	if got := names(inner); !inner.Prunable || inner.Size != 32 || !strings.HasSuffix(got, "block2.conv2/in[3]") || strings.Contains(got, "block2.sc") {
		t.Fatalf("block 2's inner group: %s", got)
	}
	last := find("block3.conv2", "out") // joined with block 3's shortcut, read by fc through the pooling
	if got := names(last); !strings.Contains(got, "block3.sc/out[0]") || !strings.HasSuffix(got, "fc/in[1]") {
		t.Fatalf("the last stage's group: %s", got)
	}
	if g := find("conv1", "in"); g.Prunable || g.Size != 1 {
		t.Fatal("the input's channels are prunable")
	}
	if g := find("fc", "out"); g.Prunable {
		t.Fatal("the classes are prunable")
	}
	// LeNet-5: fc1 reads conv2's 50 channels at 16 positions each.
	l5 := LeNet5(Shape{H: 28, W: 28, C: 1}, [2]int{20, 50}, 500, 10, 0)
	groups, err = l5.ChannelGroups()
	if err != nil {
		t.Fatal(err)
	}
	if g := find("conv2", "out"); names(g) != "conv2/out[0] conv2.bias/out[0] fc1/in[1]" || g.Members[2].Stride != 50 {
		t.Fatalf("LeNet-5's conv2 group: %s (stride %d)", names(g), g.Members[2].Stride)
	}
	// MobileNet: a depthwise convolution carries its input's channels.
	mb, err := MobileNet(Shape{H: 28, W: 28, C: 1}, 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	groups, err = mb.ChannelGroups()
	if err != nil {
		t.Fatal(err)
	}
	if g := find("block2.expand", "out"); !strings.Contains(names(g), "block2.dw/pass[0]") || !strings.Contains(names(g), "block2.project/in[3]") {
		t.Fatalf("MobileNet's expansion group: %s", names(g))
	}
}
