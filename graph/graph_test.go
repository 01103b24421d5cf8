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
