package trainer

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestAVX2MomentumMatchesTheGoLoop: SGD with momentum, plain and Nesterov,
// with and without masks and weight decay, gives the same bits with the AVX2 update as with
// the Go loop, over tensor lengths with and without a tail of fewer than
// eight, on values that include zeros of both signs and subnormals.
func TestAVX2MomentumMatchesTheGoLoop(t *testing.T) {
	if !hasAVX2 {
		t.Skip("no AVX2 on this CPU: only the Go loop runs")
	}
	defer func() { hasAVX2 = true }()
	sizes := []int{1, 7, 8, 9, 300, 1003}
	awkward := func(r *rand.Rand) float32 {
		switch r.IntN(8) {
		case 0:
			return 0
		case 1:
			return float32(math.Copysign(0, -1))
		case 2:
			return float32(r.NormFloat64()) * 1e-39 // subnormal
		default:
			return float32(r.NormFloat64())
		}
	}
	for _, c := range []struct {
		wd               float64
		masked, nesterov bool
	}{{0, false, false}, {1e-4, false, false}, {0, true, false}, {1e-4, true, false}, {0, false, true}, {1e-4, false, true}, {1e-4, true, true}} {
		wd, masked := c.wd, c.masked
		run := func(avx bool) ([][]float32, [][]float32) {
			hasAVX2 = avx
			r := rand.New(rand.NewPCG(3, 4))
			o, err := NewOptimizer(OptimConfig{Kind: "sgd", Momentum: 0.9, WeightDecay: wd, Nesterov: c.nesterov}, sizes)
			if err != nil {
				t.Fatal(err)
			}
			params, grads := make([][]float32, len(sizes)), make([][]float32, len(sizes))
			var masks [][]byte
			if masked {
				masks = make([][]byte, len(sizes))
			}
			for i, n := range sizes {
				params[i], grads[i] = make([]float32, n), make([]float32, n)
				for j := range params[i] {
					params[i][j] = awkward(r)
				}
				if masked {
					masks[i] = make([]byte, n)
					for j := range masks[i] {
						masks[i][j] = byte(r.IntN(2))
					}
				}
			}
			for range 5 {
				for i := range grads {
					for j := range grads[i] {
						grads[i][j] = awkward(r)
					}
				}
				o.Step(params, grads, masks, 0.05)
			}
			return params, o.State()
		}
		pa, va := run(true)
		pb, vb := run(false)
		same := func(a, b [][]float32) bool {
			return slices.EqualFunc(a, b, func(x, y []float32) bool {
				return slices.EqualFunc(x, y, func(p, q float32) bool { return math.Float32bits(p) == math.Float32bits(q) })
			})
		}
		if !same(pa, pb) || !same(va, vb) {
			t.Fatalf("weight decay %v, masked %v, Nesterov %v: the AVX2 update differs from the Go loop", wd, masked, c.nesterov)
		}
	}
}

// TestPartUpdateFromSourcesMatchesInPlace: a chunk owner's update that
// reads the parameters and the optimizer state from where they are
// (stepPart's w0 and from) and writes them elsewhere gives the bits of
// the update in place, and leaves its sources as they were — SGD plain,
// with momentum, Nesterov, masked or not (AVX2 and the Go loops), and
// Adam.
func TestPartUpdateFromSourcesMatchesInPlace(t *testing.T) {
	avx := hasAVX2
	defer func() { hasAVX2 = avx }()
	sizes := []int{3, 8, 301}
	bits := func(a, b [][]float32) bool {
		return slices.EqualFunc(a, b, func(x, y []float32) bool {
			return slices.EqualFunc(x, y, func(p, q float32) bool { return math.Float32bits(p) == math.Float32bits(q) })
		})
	}
	clone := func(a [][]float32) [][]float32 {
		out := make([][]float32, len(a))
		for i := range a {
			out[i] = slices.Clone(a[i])
		}
		return out
	}
	for _, cfg := range []OptimConfig{
		{Kind: "sgd", WeightDecay: 1e-4}, {Kind: "sgd", Momentum: 0.9, WeightDecay: 1e-4},
		{Kind: "sgd", Momentum: 0.9, Nesterov: true}, {Kind: "adamw", WeightDecay: 0.01},
	} {
		for _, masked := range []bool{false, true} {
			for _, useAVX := range []bool{false, avx} {
				hasAVX2 = useAVX
				r := rand.New(rand.NewPCG(7, 8))
				o, err := NewOptimizer(cfg, sizes)
				if err != nil {
					t.Fatal(err)
				}
				params, grads := make([][]float32, len(sizes)), make([][]float32, len(sizes))
				var masks [][]byte
				for i, n := range sizes {
					params[i], grads[i] = make([]float32, n), make([]float32, n)
					for j := range n {
						params[i][j], grads[i][j] = float32(r.NormFloat64()), float32(r.NormFloat64())
					}
					if masked {
						m := make([]byte, n)
						for j := range m {
							m[j] = byte(r.IntN(2))
						}
						masks = append(masks, m)
					}
				}
				o.Step(params, grads, masks, 0.05) // a state that is not zero
				state, before := clone(o.State()), clone(params)
				// In place, on copies.
				inPlace := o.Like(sizes)
				if err := inPlace.Load(state, o.Steps()); err != nil {
					t.Fatal(err)
				}
				want := clone(params)
				inPlace.Step(want, grads, masks, 0.05)
				// From the sources, into buffers of NaNs.
				dst := o.Like(sizes)
				dst.SetSteps(o.Steps() + 1)
				got := make([][]float32, len(sizes))
				for i, n := range sizes {
					got[i] = make([]float32, n)
					for j := range got[i] {
						got[i][j] = float32(math.NaN())
					}
					for _, b := range dst.State() {
						if len(b) == n {
							for j := range b {
								b[j] = float32(math.NaN())
							}
						}
					}
				}
				for i := range sizes {
					var m []byte
					if masked {
						m = masks[i]
					}
					dst.(partStepper).stepPart(i, 0, got[i], params[i], grads[i], m, 0.05, o)
				}
				if !bits(got, want) || !bits(dst.State(), inPlace.State()) {
					t.Fatalf("%+v, masked %v, AVX2 %v: the update from its sources differs from the one in place", cfg, masked, useAVX)
				}
				if !bits(params, before) || !bits(o.State(), state) {
					t.Fatalf("%+v, masked %v, AVX2 %v: the update wrote its sources", cfg, masked, useAVX)
				}
			}
		}
	}
}

// TestAVX2FixedPointMatchesToFixed: AddFixed's vector passes (AVX2, and
// AVX-512 where the CPU has it) give the same integers as ToFixed element
// by element — ties of both signs (x.5 after
// scaling, to even), zeros of both signs, subnormals, values around the
// pass's 2^11 limit and beyond it up to FixedLimit, over lengths with and
// without a tail — and stops at a NaN or an out-of-range value with the
// Go loop's error and index.
func TestAVX2FixedPointMatchesToFixed(t *testing.T) {
	if !hasAVX2 {
		t.Skip("no AVX2 on this CPU: only the Go loop runs")
	}
	avx512 := hasAVX512DQ
	defer func() { hasAVX2, hasAVX512DQ = true, avx512 }()
	r := rand.New(rand.NewPCG(5, 6))
	awkward := func() float32 {
		switch r.IntN(10) {
		case 0:
			return 0
		case 1:
			return float32(math.Copysign(0, -1))
		case 2:
			return float32(r.NormFloat64()) * 1e-40 // subnormal: rounds to 0 or ±1
		case 3: // an odd multiple of 2^-41: a tie after scaling
			return float32(2*r.IntN(1000)+1-1000) * float32(math.Ldexp(1, -41))
		case 4:
			return float32(math.Ldexp(1, 11)) * (1 + float32(r.IntN(3)-1)*1e-6) // around the pass's limit
		case 5:
			return float32(r.NormFloat64()) * 1e5 // beyond it: the Go loop's
		case 6:
			return float32(r.NormFloat64()) * 1e-9
		case 7: // the largest magnitude ToFixed takes
			return float32(2*r.IntN(2)-1) * math.Nextafter32(FixedLimit, 0)
		default:
			return float32(r.NormFloat64())
		}
	}
	// conv converts with the Go loop (level 0), AVX2 (1) or AVX-512 (2).
	conv := func(level int, vs []float32) ([]int64, error) {
		hasAVX2, hasAVX512DQ = level >= 1, level >= 2 && avx512
		into, set := make([]int64, len(vs)), make([]int64, len(vs))
		for i := range into {
			into[i] = int64(i) * 12345 // AddFixed adds to what is there,
			set[i] = -int64(i) * 777   // SetFixed replaces it
		}
		errAdd, errSet := AddFixed(into, vs), SetFixed(set, vs)
		if (errAdd == nil) != (errSet == nil) || errAdd != nil && errAdd.Error() != errSet.Error() {
			t.Fatalf("AddFixed: %v, SetFixed: %v", errAdd, errSet)
		}
		for i := range set {
			if errAdd == nil && into[i]-int64(i)*12345 != set[i] {
				t.Fatalf("value %d (%g): AddFixed to zero %d, SetFixed %d", i, vs[i], into[i]-int64(i)*12345, set[i])
			}
		}
		return into, errAdd
	}
	// A healthy gradient goes through the pass whole, but for its tail.
	healthy := make([]float32, 1003)
	for i := range healthy {
		healthy[i] = float32(r.NormFloat64())
	}
	if k := fixed4(&make([]int64, 1003)[0], &healthy[0], 1003, true); k != 1000 {
		t.Fatalf("the AVX2 pass took %d of 1003 healthy values, want 1000", k)
	}
	if avx512 {
		healthy[5] = 1e5 // beyond AVX2's limit, within AVX-512's
		if k := fixedSum16(&make([]int64, 1003)[0], &[]*float32{&healthy[0]}[0], 1, 0, 1003, true); k != 992 {
			t.Fatalf("the AVX-512 pass took %d of 1003 healthy values, want 992", k)
		}
	}
	for _, n := range []int{1, 3, 4, 5, 8, 15, 16, 17, 33, 1003, 4096} {
		vs := make([]float32, n)
		for i := range vs {
			vs[i] = awkward()
		}
		want, err := conv(0, vs)
		if err != nil {
			t.Fatal(err)
		}
		for level := 1; level <= 2; level++ {
			got, err := conv(level, vs)
			if err != nil {
				t.Fatal(err)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("n=%d: value %d (%g): pass %d %d, Go %d", n, i, vs[i], level, got[i], want[i])
				}
			}
		}
		for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(-1)), FixedLimit, -FixedLimit} {
			at := r.IntN(n)
			spoilt := slices.Clone(vs)
			spoilt[at] = bad
			_, errGo := conv(0, spoilt)
			for level := 1; level <= 2; level++ {
				if _, errAVX := conv(level, spoilt); errGo == nil || errAVX == nil || errGo.Error() != errAVX.Error() {
					t.Fatalf("n=%d, %v at %d: Go %v, pass %d %v", n, bad, at, errGo, level, errAVX)
				}
			}
		}
	}
}

// TestFromFixedAddMatchesFromFixed converts sums of every magnitude — past
// 2^53, where int64 → float64 rounds, around the AVX2 pass's 2^51 limit,
// and past float32's range at the 2^-40 scale's other end — with the
// AVX-512 blocks, the AVX2 blocks and FromFixed alone: the same bits, over
// lengths with and without a tail.
func TestFromFixedAddMatchesFromFixed(t *testing.T) {
	if !hasAVX2 {
		t.Skip("no AVX2 on this CPU: only the Go loop runs")
	}
	avx512 := hasAVX512DQ
	defer func() { hasAVX2, hasAVX512DQ = true, avx512 }()
	r := rand.New(rand.NewPCG(9, 10))
	edges := []int64{1 << 51, 1<<51 - 1, -1 << 51, -1<<51 - 1, 1 << 52, -1 << 62}
	for _, n := range []int{0, 1, 3, 4, 5, 7, 8, 9, 16, 31, 1003} {
		q, add := make([]int64, n), make([]int64, n)
		for i := range q {
			shift := r.IntN(62)
			if i%2 == 0 {
				shift = r.IntN(50) // below the AVX2 pass's limit
			}
			q[i] = r.Int64N(1<<shift+1) - r.Int64N(1<<shift+1)
			add[i] = r.Int64N(1<<shift+1) - r.Int64N(1<<shift+1)
			switch i % 9 {
			case 4:
				q[i], add[i] = 1<<54, 2 // a tie past 2^53: 2^54 + 2 rounds to 2^54
			case 7:
				q[i], add[i] = edges[r.IntN(len(edges))], 0
			}
		}
		for level := 1; level <= 2; level++ {
			if level == 2 && !avx512 {
				continue
			}
			hasAVX512DQ = level == 2
			got := make([]float32, n)
			FromFixedAdd(got, q, add)
			for i := range q {
				if want := FromFixed(q[i] + add[i]); math.Float32bits(got[i]) != math.Float32bits(want) {
					t.Fatalf("n=%d, pass %d: value %d (%d + %d): %v, want %v", n, level, i, q[i], add[i], got[i], want)
				}
			}
		}
	}
	// Healthy sums go through the AVX2 pass whole, but for the tail.
	q := make([]int64, 1003)
	for i := range q {
		q[i] = r.Int64N(1<<51) - 1<<50
	}
	if k := fromFixed4(&make([]float32, 1003)[0], &q[0], &make([]int64, 1003)[0], 1003); k != 1000 {
		t.Fatalf("the AVX2 pass took %d of 1003 healthy sums, want 1000", k)
	}
}

// TestAVX2CheckMatchesToFixed: CheckFixed's eight-at-a-time comparison
// accepts exactly the values ToFixed accepts — around FixedLimit, the
// largest finite values, ±Inf, NaNs of every payload, zeros of both signs
// — and names the first one it refuses, with and without AVX2.
func TestAVX2CheckMatchesToFixed(t *testing.T) {
	if !hasAVX2 {
		t.Skip("no AVX2 on this CPU: only the Go loop runs")
	}
	defer func() { hasAVX2 = true }()
	limit := float32(FixedLimit)
	edges := []float32{limit, -limit, math.Nextafter32(limit, 0), -math.Nextafter32(limit, 0), math.MaxFloat32,
		float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), math.Float32frombits(0xffc00001),
		math.Float32frombits(0x7f800001), 0, float32(math.Copysign(0, -1)), 1e-45, 2047.9}
	r := rand.New(rand.NewPCG(7, 8))
	for trial := range 3000 {
		vs := make([]float32, 1+r.IntN(40))
		for i := range vs {
			vs[i] = float32(r.NormFloat64())
		}
		bad := -1
		if trial%3 != 0 {
			at := r.IntN(len(vs))
			vs[at] = edges[r.IntN(len(edges))]
		}
		for i, v := range vs {
			if _, ok := ToFixed(v); !ok {
				bad = i
				break
			}
		}
		for _, avx := range []bool{true, false} {
			hasAVX2 = avx
			err := CheckFixed(vs)
			if bad < 0 && err != nil || bad >= 0 && (err == nil || !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), fmt.Sprintf(" at %d ", bad))) {
				t.Fatalf("AVX2 %v, %v: %v; want the value at %d refused (-1: none)", avx, vs, err, bad)
			}
		}
	}
}

// TestFixedSumMatchesAddFixed: AddFixedSum and SetFixedSum leave the
// integers AddFixed of each vector in turn leaves, with the AVX-512 pass,
// the AVX2 pass and the Go loop, for one to eight vectors over lengths
// with and without a tail, healthy values and values past the AVX2 pass's
// limit; a refused value anywhere gives the Go loop's error, and a block
// a pass refuses is left for the Go loop whole.
func TestFixedSumMatchesAddFixed(t *testing.T) {
	avx2, avx512 := hasAVX2, hasAVX512DQ
	defer func() { hasAVX2, hasAVX512DQ = avx2, avx512 }()
	r := rand.New(rand.NewPCG(9, 10))
	value := func(healthy bool) float32 {
		switch r.IntN(6) {
		case 0:
			return float32(math.Copysign(0, -1))
		case 1: // a tie after scaling
			return float32(2*r.IntN(1000)+1-1000) * float32(math.Ldexp(1, -41))
		case 2:
			if healthy {
				return float32(2*r.IntN(2)-1) * math.Nextafter32(1<<11, 0) // the AVX2 pass's largest
			}
			return float32(2*r.IntN(2)-1) * math.Nextafter32(FixedLimit, 0)
		default:
			return float32(r.NormFloat64())
		}
	}
	if avx2 {
		vss := [][]float32{make([]float32, 1003), make([]float32, 1003), make([]float32, 1003)}
		ptrs := make([]*float32, len(vss))
		for j := range vss {
			for i := range vss[j] {
				vss[j][i] = value(true)
			}
			ptrs[j] = &vss[j][0]
		}
		if k := fixedSum8(&make([]int64, 1003)[0], &ptrs[0], 3, 0, 1003, true); k != 1000 {
			t.Fatalf("the AVX2 pass took %d of 3×1003 healthy values, want 1000", k)
		}
	}
	for _, m := range []int{1, 2, 3, 4, 8} {
		for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 100, 1003} {
			healthy := n%2 == 1
			vss := make([][]float32, m)
			for j := range vss {
				vss[j] = make([]float32, n)
				for i := range vss[j] {
					vss[j][i] = value(healthy)
				}
			}
			start := make([]int64, n)
			for i := range start {
				start[i] = r.Int64N(1<<40) - 1<<39
			}
			want := slices.Clone(start)
			for _, vs := range vss {
				if err := AddFixed(want, vs); err != nil {
					t.Fatal(err)
				}
			}
			for level := range 3 { // the Go loop, AVX2, AVX-512
				if level == 1 && !avx2 || level == 2 && !avx512 {
					continue
				}
				hasAVX2, hasAVX512DQ = level >= 1, level == 2
				got := slices.Clone(start)
				if err := AddFixedSum(got, vss); err != nil {
					t.Fatal(err)
				}
				set := make([]int64, n)
				for i := range set {
					set[i] = -7
				}
				if err := SetFixedSum(set, vss); err != nil {
					t.Fatal(err)
				}
				for i := range want {
					if got[i] != want[i] || set[i] != want[i]-start[i] {
						t.Fatalf("%d vectors of %d, pass %d: value %d: add %d, set %d, want %d and %d", m, n, level, i, got[i], set[i], want[i], want[i]-start[i])
					}
				}
				if n == 0 {
					continue
				}
				j, at := r.IntN(m), r.IntN(n)
				spoilt := slices.Clone(vss)
				spoilt[j] = slices.Clone(vss[j])
				spoilt[j][at] = []float32{float32(math.NaN()), FixedLimit, -FixedLimit}[r.IntN(3)]
				hasAVX2, hasAVX512DQ = false, false
				errGo := AddFixedSum(slices.Clone(start), spoilt)
				hasAVX2, hasAVX512DQ = level >= 1, level == 2
				errFast := AddFixedSum(slices.Clone(start), spoilt)
				if errGo == nil || errFast == nil || errGo.Error() != errFast.Error() {
					t.Fatalf("%d vectors of %d, %v in vector %d at %d: Go %v, pass %d %v", m, n, spoilt[j][at], j, at, errGo, level, errFast)
				}
			}
		}
	}
	for _, vss := range [][][]float32{{{1, 2, 3}, {1, 2}}, {{1, 2, 3, 4}}} {
		if err := AddFixedSum(make([]int64, 3), vss); err == nil {
			t.Fatalf("vectors of %d values summed into 3", len(vss[len(vss)-1]))
		}
	}
}
