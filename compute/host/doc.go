// Package host implements compute.Device in the computer's own memory:
// the reference device every other device is checked against, and the
// strict device, whose buffers sit in pages mapped PROT_NONE except while
// one of its own kernels (or an Upload/Download) runs, so that any read
// or write of device memory from host code faults — the proof, on machines
// without a GPU, that a training step touches device memory only through
// the Device interface.
package host
