package trainer

import (
	"encoding/json"
	"fmt"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/compress"
)

// unassigned marks a weight outside every cluster: a pruned one.
const unassigned = 255

// KMeansPolicy is Deep Compression's trained weight sharing: from sample
// Start on, each listed weight's non-zero values are clustered by k-means
// into Clusters shared values, and after every update each cluster's
// value becomes the mean of its members' updated values (the centroid
// follows the average gradient) and every member is set to it. Pruned
// weights stay outside the clusters, at zero; a weight pruned later leaves
// its cluster. A model file then stores each weight as a small table of
// shared values and entropy-coded indices (the codebook encoding).
type KMeansPolicy struct {
	Layers   []string
	Clusters int
	Start    int64
	Logger   hclog.Logger

	centroids [][]float32 // per layer, once clustered
	assign    [][]uint8
}

var (
	_ BeforeStepper = (*KMeansPolicy)(nil)
	_ AfterUpdater  = (*KMeansPolicy)(nil)
	_ Stateful      = (*KMeansPolicy)(nil)
)

// Name implements Policy.
func (p *KMeansPolicy) Name() string { return "cluster" }

// BeforeStep clusters the weights when training reaches Start.
func (p *KMeansPolicy) BeforeStep(s *State) error {
	if p.centroids != nil || s.SamplesSeen < p.Start {
		return nil
	}
	idx, err := s.weightIndices(p.Layers)
	if err != nil {
		return err
	}
	for k, i := range idx {
		w := s.Params[i]
		var vals []float32
		var where []int
		for j, v := range w {
			if v != 0 {
				vals, where = append(vals, v), append(where, j)
			}
		}
		c, a, err := compress.KMeans(vals, p.Clusters, 50)
		if err != nil {
			return err
		}
		full := make([]uint8, len(w))
		for j := range full {
			full[j] = unassigned
		}
		for n, j := range where {
			full[j] = a[n]
			w[j] = c[a[n]]
		}
		p.centroids, p.assign = append(p.centroids, c), append(p.assign, full)
		if p.Logger != nil {
			p.Logger.Info("weights clustered", "layer", p.Layers[k], "clusters", p.Clusters, "members", len(vals), "samples", s.SamplesSeen)
		}
	}
	return nil
}

// AfterUpdate moves each centroid to its members' mean and snaps them.
func (p *KMeansPolicy) AfterUpdate(s *State) error {
	if p.centroids == nil {
		return nil
	}
	idx, err := s.weightIndices(p.Layers)
	if err != nil {
		return err
	}
	sums := make([]float64, p.Clusters)
	counts := make([]int, p.Clusters)
	for k, i := range idx {
		w, a, mask := s.Params[i], p.assign[k], s.Masks[i]
		if len(a) != len(w) {
			return fmt.Errorf("trainer: cluster: weight %s changed size since it was clustered", p.Layers[k])
		}
		clear(sums)
		clear(counts)
		for j, c := range a {
			if c == unassigned {
				continue
			}
			if mask != nil && mask[j] == 0 {
				a[j] = unassigned // pruned since: out of its cluster, held at zero
				continue
			}
			sums[c] += float64(w[j])
			counts[c]++
		}
		cent := p.centroids[k]
		for c := range cent {
			if counts[c] > 0 {
				cent[c] = float32(sums[c] / float64(counts[c]))
			}
		}
		for j, c := range a {
			if c != unassigned {
				w[j] = cent[c]
			}
		}
	}
	return nil
}

type kmeansState struct {
	Centroids [][]float32 `json:"centroids"`
	Assign    [][]uint8   `json:"assign"` // base64 in JSON
}

// SaveState implements Stateful.
func (p *KMeansPolicy) SaveState() (json.RawMessage, error) {
	return json.Marshal(kmeansState{Centroids: p.centroids, Assign: p.assign})
}

// LoadState implements Stateful.
func (p *KMeansPolicy) LoadState(raw json.RawMessage) error {
	var st kmeansState
	if err := json.Unmarshal(raw, &st); err != nil {
		return err
	}
	if len(st.Centroids) != len(st.Assign) {
		return fmt.Errorf("%d centroid tables for %d assignments", len(st.Centroids), len(st.Assign))
	}
	p.centroids, p.assign = st.Centroids, st.Assign
	return nil
}
