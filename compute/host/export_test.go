package host

import (
	"unsafe"

	"github.com/lathe-ml/lathe/compute"
)

// Peek reads a buffer's first element directly, as a host op that
// bypassed the Device would.
func Peek(b compute.Buffer) float32 { return b.(*buffer).f[0] }

// Address is where a buffer's memory starts.
func Address(b compute.Buffer) uintptr { return uintptr(unsafe.Pointer(&b.(*buffer).region[0])) }
