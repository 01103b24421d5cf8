package rundir

import (
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/trainer"
)

// lenet300Snapshot is a LeNet-300-100 training state as a pruning run
// holds it: weights, SGD momentum, and a mask per weight.
func lenet300Snapshot(b testing.TB) (*Checkpointer, *trainer.Snapshot, *model.Model) {
	m, err := model.New(model.Spec{Arch: "lenet300"}, model.MNISTInput, 1)
	if err != nil {
		b.Fatal(err)
	}
	sn := &trainer.Snapshot{Spec: m.Spec, Step: 1000}
	for _, p := range m.Params {
		sn.Params = append(sn.Params, p.Data())
		sn.Optimizer = append(sn.Optimizer, make([]float32, p.Size()))
		var mask []byte
		if !p.Bias {
			mask = make([]byte, p.Size())
			for i := range mask {
				mask[i] = byte(i % 2)
			}
		}
		sn.Masks = append(sn.Masks, mask)
	}
	c := &Checkpointer{Dir: b.TempDir(), Job: "bench", Threads: 2, Log: hclog.NewNullLogger()}
	return c, sn, m
}

// BenchmarkCheckpointWrite writes a LeNet-300-100 training checkpoint:
// encoding, checksum, temporary file, fsync, rename.
func BenchmarkCheckpointWrite(b *testing.B) {
	c, sn, m := lenet300Snapshot(b)
	path := filepath.Join(c.Dir, "ckpt.arrow")
	for b.Loop() {
		f, err := c.File(sn, m)
		if err != nil {
			b.Fatal(err)
		}
		if err := checkpoint.Write(path, f); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckpointRead reads one back: checksum, Arrow, tensors.
func BenchmarkCheckpointRead(b *testing.B) {
	c, sn, m := lenet300Snapshot(b)
	path := filepath.Join(c.Dir, "ckpt.arrow")
	f, err := c.File(sn, m)
	if err != nil {
		b.Fatal(err)
	}
	if err := checkpoint.Write(path, f); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(f.Bytes))
	for b.Loop() {
		if _, err := checkpoint.Read(path); err != nil {
			b.Fatal(err)
		}
	}
}
