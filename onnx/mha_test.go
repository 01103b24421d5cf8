package onnx

import "testing"

// TestBatchMultiples: shape arithmetic follows the batch times a constant
// (nn.MultiheadAttention's batch·heads and T·batch) and refuses the rest.
func TestBatchMultiples(t *testing.T) {
	for _, c := range []struct {
		op   string
		x, y int64
		want int64
	}{
		{"Mul", batch, 4, batchTimes(4)},
		{"Mul", 3, batchTimes(4), batchTimes(12)},
		{"Div", batchTimes(12), 4, batchTimes(3)},
		{"Div", -7, 2, -3}, // integers truncate, as ONNX divides them
		{"Add", 96, 2, 98},
		{"Sub", 5, 7, -2},
	} {
		got, err := intOp(c.op, c.x, c.y)
		if err != nil || got != c.want {
			t.Errorf("%s(%s, %s) = %s, %v; want %s", c.op, shapeString([]int64{c.x}), shapeString([]int64{c.y}), shapeString([]int64{got}), err, shapeString([]int64{c.want}))
		}
	}
	for _, c := range []struct {
		op   string
		x, y int64
	}{{"Add", batch, 1}, {"Div", batchTimes(3), 2}, {"Mul", batch, batch}, {"Mul", batch, -1}, {"Div", 4, 0}, {"Sub", batchTimes(2), batch}} {
		if got, err := intOp(c.op, c.x, c.y); err == nil {
			t.Errorf("%s(%d, %d) = %d, want an error", c.op, c.x, c.y, got)
		}
	}
	if s := shapeString([]int64{12, batchTimes(4), -1}); s != "[12, batch·4, -1]" {
		t.Errorf("shapeString: %s", s)
	}
}
