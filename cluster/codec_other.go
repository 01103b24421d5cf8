//go:build !amd64

package cluster

// The narrow codec's block forms are amd64's: here the Go loops do it all.

func foldBlocks([]int64) (uint64, int)      { return 0, 0 }
func packInt64s([]byte, []int64, int) int   { return 0 }
func unpackInt64s([]int64, []byte, int) int { return 0 }
func copyFinite([]float32, []byte) int      { return 0 }
