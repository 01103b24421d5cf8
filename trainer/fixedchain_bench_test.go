package trainer

import (
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/compute/cpu"
)

// BenchmarkFixedProductsTeacher sums a worker's four micro-shards of 16
// samples into the teacher's two large weight gradients (1200×784 and
// 1200×1200) in fixed point: as computeShards does with the exact GEMM
// (fused: fixedProducts, with AVX-512), and as it does where
// fixedProducts does not run (slots: each run's product through the
// exact GEMM, then SetFixedSum).
func BenchmarkFixedProductsTeacher(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	eng := cpu.New(cpu.Options{Threads: 1, Exact: true})
	const runs, n = 4, 16
	for _, sh := range [][2]int{{1200, 784}, {1200, 1200}} {
		out, in := sh[0], sh[1]
		ns := []int{n, n, n, n}[:runs]
		dzs, xs := randomRuns(r, ns, out, in, 0.01)
		into := make([]int64, out*in)
		name := map[int]string{784: "784", 1200: "1200"}[in]
		b.Run("fused/"+name, func(b *testing.B) {
			if !canFixProducts(out, in) {
				b.Skip("no AVX-512 here: the slots path runs instead")
			}
			for b.Loop() {
				if !fixedProducts(into, dzs, xs, ns, out, in, 0, out, false) {
					b.Fatal("refused")
				}
			}
		})
		b.Run("slots/"+name, func(b *testing.B) {
			prods := make([][]float32, runs)
			for k := range prods {
				prods[k] = make([]float32, out*in)
			}
			for b.Loop() {
				for k := range prods {
					eng.Sgemm(true, false, out, in, ns[k], 1, dzs[k], out, xs[k], in, 0, prods[k], in)
				}
				if err := SetFixedSum(into, prods); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
