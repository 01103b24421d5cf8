package model

import "gorgonia.org/tensor"

func tensorFrom(x []float32, shape ...int) *tensor.Dense {
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(x))
}
