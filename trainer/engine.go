package trainer

import "gorgonia.org/tensor"

type tensorEngine = tensor.Engine

// defaultEngine backs TapeMachines for compute engines that are not
// themselves tensor engines.
var defaultEngine tensor.Engine = tensor.StdEng{}
