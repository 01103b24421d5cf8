package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"unsafe"

	"github.com/nats-io/nats.go"

	"github.com/lathe-ml/lathe/trainer"
)

// Version is the protocol version; the coordinator refuses workers that
// announce another.
const Version = "lathe-cluster/10" // 10: a worker that computes one micro-shard sends its partials as float32 (.rf, frameRF); 9: a coordinator that follows (PhaseSpec.SyncEvery, .sync parts, restarts); 8: target searches' cost tasks (TaskSpec.Cell); 7: TLS on peer connections (Control.PeerTLS); 6: the peer data plane (Hello.Peer, Control.Peers); 5: signed messages with sequence numbers; 4: owners update their chunks (.wg, .moments); 3: generations with a first step, joins mid-phase, tasks, shared values

// Hello is a worker's registration.
type Hello struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Cores   int    `json:"cores"`
	Device  string `json:"device"`
	PID     int    `json:"pid"`
	// Peer is the address the worker's peer data plane listens at ("":
	// none; its data goes through NATS).
	Peer string `json:"peer,omitempty"`
}

// Welcome answers a Hello.
type Welcome struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Heartbeat is a worker's periodic sign of life.
type Heartbeat struct {
	Name  string `json:"name"`
	Phase uint64 `json:"phase"`
	Step  int64  `json:"step"`  // steps completed in the phase
	State string `json:"state"` // idle, training, task, failed
	Error string `json:"error,omitempty"`
	// Bytes of data messages sent and received, and steps, in the phase.
	BytesSent     int64 `json:"bytes_sent"`
	BytesReceived int64 `json:"bytes_received"`
	// PeerBytesSent are the data bytes of BytesSent that went over peer
	// connections; NATSBytesOut everything the worker published through
	// the NATS server in the phase (data, heartbeats, requests).
	PeerBytesSent int64 `json:"peer_bytes_sent,omitempty"`
	NATSBytesOut  int64 `json:"nats_bytes_out,omitempty"`
	Shards        int64 `json:"shards"` // micro-shards computed in the phase
	// ComputeSeconds is the time spent computing those micro-shards (not
	// waiting for the others): shards per compute second is the worker's
	// capacity.
	ComputeSeconds float64 `json:"compute_seconds"`
	// StepSeconds is the time spent in the phase's steps, WaitSeconds the
	// part of it spent waiting on other replicas (ReplicaStats).
	StepSeconds float64 `json:"step_seconds,omitempty"`
	WaitSeconds float64 `json:"wait_seconds,omitempty"`
	// CPUSeconds is the worker process's CPU time during those steps
	// (ReplicaStats).
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	// Digest is the SHA-256 (hex) of the worker's weights after step
	// DigestStep (1-based), which the coordinator compares with its own.
	DigestStep int64  `json:"digest_step,omitempty"`
	Digest     string `json:"digest,omitempty"`
	// MessagesRejected counts the messages the worker refused in the
	// job (its replicas' included; the replica's count restarts with each
	// phase).
	MessagesRejected int64 `json:"messages_rejected,omitempty"`
}

// Control is a coordinator message to every worker.
type Control struct {
	Kind    string   `json:"kind"` // phase, gen, join, task, end, stop, register (the named workers must register again)
	Phase   uint64   `json:"phase"`
	Gen     uint64   `json:"gen"`
	Members []string `json:"members,omitempty"` // the computing workers, in rank order
	// Shares are the micro-shards each member computes, in rank order
	// (absent: an equal split): the coordinator weights them by the
	// workers' measured speeds.
	Shares []int `json:"shares,omitempty"`
	// From is the first step (0-based) the generation runs: 0 for a
	// change at once, a step ahead when workers join mid-phase.
	From int64 `json:"from,omitempty"`
	// Join names the workers a join message admits to the running phase
	// (its Spec resumes from the coordinator's state at step From); the
	// members already training have the generation from a gen message.
	Join []string   `json:"join,omitempty"`
	Spec *PhaseSpec `json:"spec,omitempty"`
	// Task is the job-parallel task for the one worker in Members.
	Task  *TaskSpec `json:"task,omitempty"`
	Error string    `json:"error,omitempty"`
	// Plane is the job's data plane (PlaneAuto, PlanePeer, PlaneNATS) and
	// Peers the replicas' peer addresses by name, the coordinator's
	// included, on phase, join and gen messages.
	Plane string            `json:"plane,omitempty"`
	Peers map[string]string `json:"peers,omitempty"`
	// PeerTLS says the workers encrypt the peer connections they dial.
	PeerTLS bool `json:"peer_tls,omitempty"`
}

// PhaseSpec is one training run the cluster performs (a teacher, then the
// student): the resolved recipe, and the files its replicas start from,
// in the job's object store bucket.
type PhaseSpec struct {
	Name        string `json:"name"`
	Recipe      []byte `json:"recipe"` // resolved HCL
	File        string `json:"file"`   // the recipe's file name, for messages
	MicroShards int    `json:"micro_shards"`
	// SyncEvery, when positive, takes the coordinator off the step: it
	// takes the workers' state every SyncEvery steps (and at each epoch's
	// end and checkpoint) instead of reducing each step (trainer.Follower).
	SyncEvery int `json:"sync_every,omitempty"`
	// SamplesPerShard turns the workers' micro-shard counts into samples/s.
	SamplesPerShard int      `json:"samples_per_shard,omitempty"`
	Bucket          string   `json:"bucket"`
	Teachers        []string `json:"teachers,omitempty"` // objects: the teachers' model files
	// TeacherLogits is an object holding the teachers' logits for the
	// training set (offline distillation), computed once by the coordinator.
	TeacherLogits string `json:"teacher_logits,omitempty"`
	// PostTrained is an object holding the recipe's model file after its
	// post_training block, compressed once by the coordinator.
	PostTrained string `json:"post_trained,omitempty"`
	Resume      string `json:"resume,omitempty"` // object: the checkpoint to resume from
	// StartStep is the step the phase starts at: 0, or a resumed run's
	// checkpoint step.
	StartStep int64 `json:"start_step,omitempty"`
	// Data are objects holding the dataset's files (base name after the
	// last '/'), for workers without a dataset of their own.
	Data []string `json:"data,omitempty"`
}

// Header names of data messages.
const (
	hJob   = "Lathe-Job"
	hPhase = "Lathe-Phase"
	hGen   = "Lathe-Gen"
	hStep  = "Lathe-Step"
	hOff   = "Lathe-Off" // first element of the part
	hLen   = "Lathe-Len" // elements of the whole vector
)

// meta is a data message's identity.
type meta struct {
	job   string
	phase uint64
	gen   uint64
	step  int64
	off   int
	n     int
}

func (m meta) header() nats.Header {
	h := nats.Header{}
	h.Set(hJob, m.job)
	h.Set(hPhase, strconv.FormatUint(m.phase, 10))
	h.Set(hGen, strconv.FormatUint(m.gen, 10))
	h.Set(hStep, strconv.FormatInt(m.step, 10))
	h.Set(hOff, strconv.Itoa(m.off))
	h.Set(hLen, strconv.Itoa(m.n))
	return h
}

func parseMeta(h nats.Header) (meta, error) {
	var m meta
	var err error
	m.job = h.Get(hJob)
	if m.phase, err = strconv.ParseUint(h.Get(hPhase), 10, 64); err != nil {
		return m, fmt.Errorf("phase: %w", err)
	}
	if m.gen, err = strconv.ParseUint(h.Get(hGen), 10, 64); err != nil {
		return m, fmt.Errorf("gen: %w", err)
	}
	if m.step, err = strconv.ParseInt(h.Get(hStep), 10, 64); err != nil {
		return m, fmt.Errorf("step: %w", err)
	}
	if m.off, err = strconv.Atoi(h.Get(hOff)); err != nil {
		return m, fmt.Errorf("offset: %w", err)
	}
	if m.n, err = strconv.Atoi(h.Get(hLen)); err != nil {
		return m, fmt.Errorf("length: %w", err)
	}
	return m, nil
}

// encodeInt64s encodes fixed-point partials narrowly: a byte holding the
// width w (1…8), then each value in w bytes, little-endian two's
// complement — the fewest bytes that hold every value of the part. The
// partials of a gradient are far inside int64's range (|g| < 2^15 at the
// 2^-40 scale fits 7 bytes; typical gradients need 5), so the
// reduce-scatter moves well under 8 bytes a value, exactly.
// The bytes go into dst's storage when it has room.
func encodeInt64s(dst []byte, v []int64) []byte {
	// The widest value decides: fold negatives onto their complement and
	// OR everything, one pass (sixteen at a time where the CPU can).
	folded, i := foldBlocks(v)
	for _, x := range v[i:] {
		folded |= uint64(x ^ (x >> 63))
	}
	w := (bits.Len64(folded) + 1 + 7) / 8
	// Each value is stored as 8 bytes at its place, the next one
	// overwriting the first's high bytes (64 spare bytes at the end, for
	// the blocks of eight, cut off the slice).
	b := grow(dst, 1+w*len(v)+64)
	b[0] = byte(w)
	for i := packInt64s(b[1:], v, w); i < len(v); i++ {
		binary.LittleEndian.PutUint64(b[1+i*w:], uint64(v[i]))
	}
	return b[:1+w*len(v)]
}

// int64sCount checks a narrow part's width and returns how many values it
// holds.
func int64sCount(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, errors.New("an empty part: no width byte")
	}
	w := int(b[0])
	if w < 1 || w > 8 || (len(b)-1)%w != 0 {
		return 0, fmt.Errorf("%d bytes is not a whole number of %d-byte values", len(b)-1, w)
	}
	return (len(b) - 1) / w, nil
}

// decodeInt64s decodes a part int64sCount accepted into v (its length).
func decodeInt64s(v []int64, b []byte) {
	w := int(b[0])
	shift := 64 - 8*w
	i := unpackInt64s(v, b[1:], w)
	// Eight bytes at a time while eight remain, the value in the low w
	// and sign-extended from there.
	for ; i < len(v) && 1+i*w+8 <= len(b); i++ {
		v[i] = int64(binary.LittleEndian.Uint64(b[1+i*w:])<<shift) >> shift
	}
	for ; i < len(v); i++ {
		var u uint64
		for k := range w {
			u |= uint64(b[1+i*w+k]) << (8 * k)
		}
		v[i] = int64(u<<shift) >> shift
	}
}

// encodeFloat32s encodes a float32 part, little-endian, into dst's
// storage when it has room.
func encodeFloat32s(dst []byte, v []float32) []byte {
	b := grow(dst, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// littleEndian says the machine stores a float32 as the wire does: a
// float part is then its vector's own bytes.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// float32Bytes is v's float32 part: v's own bytes on a little-endian
// machine (not copied: v must not change while they are sent), else v
// encoded into dst's storage.
func float32Bytes(dst []byte, v []float32) []byte {
	if littleEndian && len(v) > 0 {
		return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
	}
	return encodeFloat32s(dst, v)
}

// grow returns n bytes of dst's storage, or new ones where it is short.
func grow(dst []byte, n int) []byte {
	if cap(dst) >= n {
		return dst[:n]
	}
	return make([]byte, n)
}

// float32sCount checks a float32 part's length and returns how many
// values it holds.
func float32sCount(b []byte) (int, error) {
	if len(b)%4 != 0 {
		return 0, fmt.Errorf("%d bytes is not a whole number of float32s", len(b))
	}
	return len(b) / 4, nil
}

// decodeFloat32s decodes a part float32sCount accepted into v (its
// length), refusing NaN and Inf (all exponent bits set); on a refusal v
// holds undefined values (the part is not placed, and the elements are
// written again by the part that is).
func decodeFloat32s(v []float32, b []byte) error {
	b = b[:4*len(v)]
	k := 0
	if littleEndian {
		// Checked and copied in one pass, eight at a time where the
		// machine can; a part refused half-way is placed again whole.
		k = copyFinite(v, b)
		v, b = v[k:], b[4*k:]
	}
	if i := nonFinite(b); i >= 0 {
		return fmt.Errorf("non-finite value at %d", k+i)
	}
	if littleEndian && len(v) > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), len(b)), b)
		return nil
	}
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return nil
}

// decodeFixable decodes a part of one micro-shard's float32 values
// (frameRF), float32sCount accepted, into v (its length), refusing a
// value ToFixed refuses (NaN, ±Inf, out of the fixed-point range): the
// owner converts them as it sums them.
func decodeFixable(v []float32, b []byte) error {
	b = b[:4*len(v)]
	if len(v) == 0 {
		return nil
	}
	if littleEndian {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), len(b)), b)
	} else {
		copy(v, float32s(b))
	}
	return trainer.CheckFixed(v)
}

// nonFinite returns the index of the first NaN or Inf among the
// little-endian float32s in b, -1 when there is none. Two values a word:
// a value is not finite when its exponent bits are all set, so where the
// word's exponent bits xor all-ones leave a zero lane (the classic
// zero-lane test: the lane's borrow reaches its top bit).
func nonFinite(b []byte) int {
	const (
		exp  = 0x7f8000007f800000
		one  = 0x0000000100000001
		high = 0x8000000080000000
	)
	n := len(b) / 4
	i := 0
	for ; i+8 <= n; i += 8 {
		w := b[4*i : 4*i+32]
		t0 := binary.LittleEndian.Uint64(w[0:])&exp ^ exp
		t1 := binary.LittleEndian.Uint64(w[8:])&exp ^ exp
		t2 := binary.LittleEndian.Uint64(w[16:])&exp ^ exp
		t3 := binary.LittleEndian.Uint64(w[24:])&exp ^ exp
		if ((t0-one)&^t0|(t1-one)&^t1|(t2-one)&^t2|(t3-one)&^t3)&high != 0 {
			break
		}
	}
	for ; i < n; i++ {
		if binary.LittleEndian.Uint32(b[4*i:])&0x7f800000 == 0x7f800000 {
			return i
		}
	}
	return -1
}

// chunk is owner j's range of an n-element vector split among size owners.
func chunk(n, size, j int) (lo, hi int) { return j * n / size, (j + 1) * n / size }

// plan is the micro-shards rank computes when size workers share shards:
// shares[rank] consecutive ones after those of the ranks before it, or,
// without shares (nil, or not one per worker adding up to shards), an
// equal split. Whoever computes a micro-shard, the reduced sum is the
// same bits, so the split is free to follow the workers' speeds.
func plan(shards int, shares []int, size, rank int) []int {
	lo, hi := rank*shards/size, (rank+1)*shards/size
	if validShares(shares, shards, size) {
		lo = 0
		for _, s := range shares[:rank] {
			lo += s
		}
		hi = lo + shares[rank]
	}
	var ks []int
	for k := lo; k < hi; k++ {
		ks = append(ks, k)
	}
	return ks
}

func validShares(shares []int, shards, size int) bool {
	if len(shares) != size {
		return false
	}
	sum := 0
	for _, s := range shares {
		if s < 0 {
			return false
		}
		sum += s
	}
	return sum == shards
}

// weightedShares splits shards among workers in proportion to their
// capacities (samples/s while computing), by largest remainders with ties
// to the lower rank; nil (an equal split) when a capacity is unknown.
func weightedShares(shards int, caps []float64) []int {
	var total float64
	for _, c := range caps {
		if !(c > 0) || math.IsInf(c, 0) {
			return nil
		}
		total += c
	}
	if len(caps) == 0 {
		return nil
	}
	shares := make([]int, len(caps))
	rem := make([]float64, len(caps))
	left := shards
	for i, c := range caps {
		q := float64(shards) * c / total
		shares[i] = int(q)
		rem[i] = q - float64(shares[i])
		left -= shares[i]
	}
	for ; left > 0; left-- {
		best := 0
		for i := range rem {
			if rem[i] > rem[best] {
				best = i
			}
		}
		shares[best]++
		rem[best] = -1
	}
	return shares
}

// stepTime is the time a step takes under shares (equal when nil) at the
// given capacities, in units of one micro-shard at 1 sample/s: the
// slowest worker's.
func stepTime(shards int, shares []int, caps []float64) float64 {
	var worst float64
	for i, c := range caps {
		n := len(plan(shards, shares, len(caps), i))
		if n > 0 {
			worst = max(worst, float64(n)/c)
		}
	}
	return worst
}
