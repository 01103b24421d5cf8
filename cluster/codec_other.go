//go:build !amd64

package cluster

func foldInt64s(v []int64) uint64 {
	var folded uint64
	for _, x := range v {
		folded |= uint64(x ^ (x >> 63))
	}
	return folded
}

func packInt64s([]byte, []int64, int) int   { return 0 }
func unpackInt64s([]int64, []byte, int) int { return 0 }
