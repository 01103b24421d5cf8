package trainer

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkFixedProductsTeacher sums a worker's four micro-shards of 16
// samples into the teacher's two large weight gradients (1200×784 and
// 1200×1200) in fixed point, as computeShards does with the exact GEMM.
func BenchmarkFixedProductsTeacher(b *testing.B) {
	if !hasAVX512DQ {
		b.Skip("no AVX-512 here: the slots path runs instead")
	}
	r := rand.New(rand.NewPCG(1, 2))
	const runs, n = 4, 16
	for _, sh := range [][2]int{{1200, 784}, {1200, 1200}} {
		out, in := sh[0], sh[1]
		ns := []int{n, n, n, n}[:runs]
		dzs, xs := randomRuns(r, ns, out, in, 0.01)
		into := make([]int64, out*in)
		b.Run(map[int]string{784: "784", 1200: "1200"}[in], func(b *testing.B) {
			for b.Loop() {
				if !fixedProducts(into, dzs, xs, ns, out, in, 0, out, false) {
					b.Fatal("refused")
				}
			}
		})
	}
}
