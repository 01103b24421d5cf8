// Package graph is the one description of a network that the rest of lathe
// builds from: named layers with typed kinds and attributes, each fed by
// the layer before it (a chain today; Inputs name other layers where a
// network branches), the input shape, and each parameter's name, shape and
// the groups structured pruning removes (rows, columns, filters,
// channels). The gorgonia training graph, the device network, the
// inference runtime, ONNX export and the model file all read a Network;
// thinning and factorization return a new one. The shipped architectures
// are presets: functions that return a Network. It imports nothing of
// lathe.
package graph
