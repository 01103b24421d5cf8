package rundir

import (
	"encoding/csv"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"

	"github.com/lathe-ml/lathe/trainer"
)

// Metrics writes metrics.csv: it appends one CSV row per epoch and flushes it to disk.
type Metrics struct {
	f      *os.File
	w      *csv.Writer
	layers []string // the sparsity columns, by weight name
	bpc    bool     // a language model's: val_bpc after the fixed columns
}

var metricsHeader = []string{"epoch", "steps", "samples_seen", "lr", "train_loss", "extra_loss", "distill_loss", "train_accuracy", "val_loss", "val_accuracy", "train_seconds", "samples_per_second", "sparsity", "guard_pauses", "weight_bits"}

// NewMetrics starts metrics.csv at path: the fixed columns, a language
// model's val_bpc (the validation loss in bits per character) when bpc,
// then one sparsity_<layer> column per weight name in layers (a cell stays
// empty while its weight does not exist, e.g. a factor before
// factorizing).
func NewMetrics(path string, layers []string, bpc bool) (*Metrics, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	mw := &Metrics{f: f, w: csv.NewWriter(f), layers: layers, bpc: bpc}
	header := slices.Clone(metricsHeader)
	if bpc {
		header = append(header, "val_bpc")
	}
	for _, l := range mw.layers {
		header = append(header, "sparsity_"+l)
	}
	mw.w.Write(header)
	mw.w.Flush()
	return mw, mw.w.Error()
}

// Write appends an epoch's row and syncs the file.
func (mw *Metrics) Write(m trainer.EpochMetrics) error {
	g := func(v float64) string { return strconv.FormatFloat(v, 'g', 8, 64) }
	row := []string{strconv.Itoa(m.Epoch), strconv.FormatInt(m.Steps, 10), strconv.FormatInt(m.SamplesSeen, 10),
		g(m.LR), g(m.TrainLoss), g(m.ExtraLoss), g(m.DistillLoss), g(m.TrainAccuracy), g(m.ValLoss), g(m.ValAccuracy), g(m.TrainSeconds), g(m.SamplesPerSec), g(m.Sparsity), strconv.Itoa(m.GuardPauses), strconv.Itoa(m.WeightBits)}
	if mw.bpc {
		row = append(row, g(m.ValLoss/math.Ln2))
	}
	for _, l := range mw.layers {
		cell := ""
		if k := slices.Index(m.LayerNames, l); k >= 0 {
			cell = g(m.LayerSparsity[k])
		}
		row = append(row, cell)
	}
	mw.w.Write(row)
	mw.w.Flush()
	if err := mw.w.Error(); err != nil {
		return fmt.Errorf("run: metrics: %w", err)
	}
	return mw.f.Sync()
}

// Close closes the file.
func (mw *Metrics) Close() { mw.f.Close() }
