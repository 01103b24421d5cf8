// Package onnx imports float ONNX models — as PyTorch's torch.onnx.export
// writes them — into lathe's one network description (graph.Network) and
// a model file with their trained weights, which every lathe command and
// recipe takes: eval, inspect, bench, export, and fine-tuning with any
// compression policy.
//
// Layouts change on the way in: images are NHWC in lathe (NCHW in ONNX),
// so convolution filters are stored [out, k, k, in] and the linear layer
// after a flattening has its columns permuted to lathe's order; a batch
// norm's epsilon goes into its running variance (lathe's is 1e-5);
// activations join the layer that computes their input. Whatever lathe's
// layer kinds cannot express exactly is refused with a NodeError naming
// the node, its operator and what is unsupported.
package onnx
