# LeNet-5 on MNIST made physically smaller: group lasso pushes whole filters
# (conv1, conv2) and neurons (fc1) toward zero, structured pruning removes
# the half with the smallest L2 norm on an AGP schedule, and at the end the
# model is thinned — rebuilt with 10 and 25 filters and 250 fc1 neurons, the
# constant outputs of removed units folded into the next layer's bias — so
# the speed-up is real: once pruning ends the smaller model is what trains,
# and summary.json's "thinned" reports the final one.
variable "epochs" {
  default = 12
}

variable "batch" {
  default = 128
}

variable "target" {
  default = 0.5
}

job "mnist-lenet5-filters" {
  dataset    = "mnist"
  seed       = 1
  epochs     = var.epochs
  batch      = var.batch
  validation = 5000

  augment {
    shift = 1
  }

  model {
    arch = "lenet5"
  }

  optimizer "sgd" {
    lr           = 0.05
    momentum     = 0.9
    weight_decay = 5e-4
    lr_schedule  = "cosine"
  }

  regularize "group_lasso" {
    layers   = ["conv1", "conv2"]
    groups   = "filters"
    strength = 1e-4
    to_epoch = var.epochs * 2 / 3
  }

  regularize "group_lasso" {
    layers   = ["fc1"]
    groups   = "rows"
    strength = 1e-4
    to_epoch = var.epochs * 2 / 3
  }

  prune "structured" {
    layers       = ["conv1", "conv2"]
    granularity  = "filters"
    norm         = "l2"
    target       = var.target
    schedule     = "agp"
    from_epoch   = var.epochs / 12
    to_epoch     = var.epochs * 2 / 3
    every_epochs = 0.5
  }

  thin {
    at_epoch = max(1, floor(var.epochs * 2 / 3) + 1)
  }

  prune "structured" {
    layers       = ["fc1"]
    granularity  = "rows"
    norm         = "l2"
    target       = var.target
    schedule     = "agp"
    from_epoch   = var.epochs / 12
    to_epoch     = var.epochs * 2 / 3
    every_epochs = 0.5
  }
}
