package rundir

import (
	"github.com/lathe-ml/lathe/cluster"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/trainer"
)

// Summary is summary.json.
type Summary struct {
	Job              string  `json:"job"`
	Dataset          string  `json:"dataset"`
	Model            string  `json:"model"`
	Seed             uint64  `json:"seed"`
	Batch            int     `json:"batch"`
	TestAccuracy     float64 `json:"test_accuracy"`
	TestLoss         float64 `json:"test_loss"`
	ValAccuracy      float64 `json:"val_accuracy"`
	ValLoss          float64 `json:"val_loss"`
	Epochs           int     `json:"epochs"`
	Steps            int64   `json:"steps"`
	SamplesSeen      int64   `json:"samples_seen"`
	SamplesPerSecond float64 `json:"samples_per_second"`
	TrainSeconds     float64 `json:"train_seconds"`
	WallSeconds      float64 `json:"wall_seconds"`
	ParamsTotal      int     `json:"params_total"`
	ParamsNonzero    int     `json:"params_nonzero"`
	DenseBytes       int     `json:"dense_bytes"`
	// MACs is the multiply-accumulates per sample of the network the
	// model file holds (thinned, batch norms folded), DenseMACs of the
	// network as trained.
	MACs      int64 `json:"macs"`
	DenseMACs int64 `json:"dense_macs"`
	// ModelBytes is the size of model.arrow, and ModelRatio DenseBytes (the
	// fp32 size of the model as trained, before any thinning at the end)
	// divided by it.
	ModelBytes   int     `json:"model_bytes"`
	ModelRatio   float64 `json:"model_ratio"`
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
	GuardPauses  int     `json:"guard_pauses"` // times an accuracy guard paused pruning
	// ResumedFromStep is the step the run resumed from (0: a fresh run).
	ResumedFromStep int64 `json:"resumed_from_step"`
	Ranks           []int `json:"ranks,omitempty"` // ranks of the factorize blocks, in order
	// PTQ is the test accuracy of the final float weights quantized after
	// training, by bit width (runs without a quantize block).
	PTQ map[string]float64 `json:"ptq_test_accuracy,omitempty"`
	// Cluster describes the workers of a cluster run.
	Cluster *ClusterSummary `json:"cluster,omitempty"`
	// TeacherTestAccuracy is the distillation teacher's test accuracy.
	TeacherTestAccuracy float64 `json:"teacher_test_accuracy,omitempty"`
	// ECE is the expected calibration error (15 bins) on the test set;
	// ECEUncompressed that of the float counterpart of a quantized model, and
	// FloatAgreement the two's top-1 agreement; TeacherAgreement the top-1
	// agreement with the distillation teacher.
	// MacroAccuracy is the mean over classes of PerClassRecall, each
	// class's fraction of its test samples recognized (null for a class
	// the test set lacks).
	MacroAccuracy float64 `json:"macro_accuracy,omitempty"`
	// TestBPC and ValBPC are a language model's test and validation loss
	// in bits per character (its accuracy is next-byte accuracy; it has
	// no per-class figures).
	TestBPC        *float64   `json:"test_bpc,omitempty"`
	ValBPC         *float64   `json:"val_bpc,omitempty"`
	PerClassRecall []*float64 `json:"per_class_recall"`
	// ClassNames name the classes of PerClassRecall and Confusion where
	// the dataset does (a text set's languages or files).
	ClassNames []string `json:"class_names,omitempty"`
	// Confusion counts the test samples by true class (rows) and
	// predicted class (columns).
	Confusion        [][]int  `json:"confusion"`
	ECE              float64  `json:"ece"`
	ECEUncompressed  *float64 `json:"ece_uncompressed,omitempty"`
	FloatAgreement   *float64 `json:"float_agreement,omitempty"`
	TeacherAgreement *float64 `json:"teacher_agreement,omitempty"`
	Engine           string   `json:"engine"`
	// Thinned is set when structured pruning left whole neurons or filters
	// at zero: the model rebuilt without them, evaluated on the test set.
	Thinned *Thinned               `json:"thinned,omitempty"`
	Layers  []model.LayerInfo      `json:"layers"`
	History []trainer.EpochMetrics `json:"history"`
}

// Thinned describes the physically smaller model thinning produced.
type Thinned struct {
	TestAccuracy float64        `json:"test_accuracy"`
	ParamsTotal  int            `json:"params_total"`
	Layers       []ThinnedLayer `json:"layers"`
}

// ThinnedLayer is one layer of a thinned model.
type ThinnedLayer struct {
	Name    string `json:"name"`
	Shape   []int  `json:"shape"`
	Removed int    `json:"removed"` // neurons or filters
}

// ClusterSummary is summary.json's account of a cluster run's student
// phase.
type ClusterSummary struct {
	Workers        int   `json:"workers"`        // the most that took part at once
	WorkersJoined  int   `json:"workers_joined"` // admitted while the phase ran
	WorkersLost    int   `json:"workers_lost"`
	WorkersFailed  int   `json:"workers_quarantined"` // left out after reporting a failure, e.g. a NaN or Inf
	StepsReplanned int64 `json:"steps_replanned"`
	// SyncEvery is the spacing of the sync points at which a following
	// coordinator took the workers' state (0: it reduced every step), and
	// Restarts the membership changes that restarted every worker from
	// its last sync point.
	SyncEvery int `json:"sync_every,omitempty"`
	Restarts  int `json:"restarts,omitempty"`
	// OptimizerStatesMoved counts the chunks whose optimizer state the
	// coordinator sent a worker that took the chunk over (after a
	// membership change or a rebuilt model); each worker keeps its own
	// chunk's state otherwise.
	OptimizerStatesMoved int64 `json:"optimizer_states_moved"`
	// Rebalances are the re-splits of the step by the workers' measured
	// speeds; Shares the last split (micro-shards per worker, absent when
	// equal).
	Rebalances int `json:"rebalances"`
	// DigestsCompared counts the workers' weight digests found equal to
	// the coordinator's, DigestMismatches those that differed (each
	// leaves its worker out).
	DigestsCompared  int            `json:"digests_compared"`
	DigestMismatches int            `json:"digest_mismatches"`
	Shares           map[string]int `json:"shares,omitempty"`
	// MessagesRejected counts the messages the coordinator and the workers
	// refused (a bad signature, a replay, a length or step out of range).
	MessagesRejected int64 `json:"messages_rejected"`
	// WorkersRefused are the registrations turned away (a worker without
	// the job's secret, say), with the reason.
	WorkersRefused []cluster.Refusal `json:"workers_refused,omitempty"`
	MicroShards    int               `json:"micro_shards"`
	// Per worker and step, mean over the workers that trained: data bytes
	// published and received (reduce-scatter and all-gather), and the
	// gradient's float32 size they compare with.
	BytesSentPerStep     float64 `json:"bytes_sent_per_step"`
	BytesReceivedPerStep float64 `json:"bytes_received_per_step"`
	GradientBytes        int     `json:"gradient_bytes"`
	// DataPlane is how the step's data travelled (auto, peer, nats).
	// BrokerBytesPerStep is what a worker put through the NATS server per
	// step (its data messages that went that way, heartbeats, requests),
	// PeerBytesPerStep what it sent over peer connections; means over the
	// workers that trained.
	DataPlane          string  `json:"data_plane,omitempty"`
	BrokerBytesPerStep float64 `json:"broker_bytes_per_step"`
	PeerBytesPerStep   float64 `json:"peer_bytes_per_step"`
	// Samples are the samples each worker computed gradients of in the
	// phase.
	Samples map[string]int64 `json:"samples,omitempty"`
	// StepTime is where each worker's time in steps went.
	StepTime map[string]StepTime `json:"step_time,omitempty"`
	// SteadySamplesPerSecond is the phase's pace once started: the samples
	// of its steps after the first SteadyFromStep, over the wall time from
	// the completion of that step to that of the last — what a timed loop
	// after warm-up steps (the PyTorch DDP anchor's) measures.
	// SteadyFromStep is the 20th step, or the first sync point at or past
	// it where the coordinator follows the workers (it completes steps
	// SyncEvery at a time). The run's
	// samples_per_second counts the workers' start-up in its first step.
	SteadySamplesPerSecond float64 `json:"steady_samples_per_second,omitempty"`
	SteadyFromStep         int     `json:"steady_from_step,omitempty"`
}

// StepTime divides a worker's time in the phase's steps: computing its
// micro-shards, waiting on the other replicas (their partials and chunks,
// or a coordinator too far behind), and the rest, the exchange's own work
// (fixed-point sums, encoding, sending, its chunk's update) — shares of
// Seconds; and the cores its process kept busy meanwhile (CPU time over
// Seconds, every thread's; absent where the system does not tell).
type StepTime struct {
	Seconds  float64 `json:"seconds"`
	Compute  float64 `json:"compute"`
	Wait     float64 `json:"wait"`
	Exchange float64 `json:"exchange"`
	CPU      float64 `json:"cpu,omitempty"`
}
