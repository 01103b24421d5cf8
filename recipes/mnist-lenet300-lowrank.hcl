# LeNet-300-100 on MNIST with its 784x300 first layer replaced, after 10
# epochs, by a rank-32 pair (784x32 then 32x300: 34 688 weights instead of
# 235 200) from a truncated SVD of the trained weights, then fine-tuned for
# the rest of the run; fc2 is pruned meanwhile with AGP (low rank composes
# with pruning).
variable "epochs" {
  default = 30
}

variable "batch" {
  default = 128
}

variable "rank" {
  default = 32
}

job "mnist-lenet300-lowrank" {
  dataset    = "mnist"
  seed       = 1
  epochs     = var.epochs
  batch      = var.batch
  validation = 5000

  augment {
    shift = 2
  }

  model {
    arch = "lenet300"
  }

  optimizer "sgd" {
    lr           = 0.05
    momentum     = 0.9
    weight_decay = 1e-4
    lr_schedule  = "cosine"
  }

  factorize {
    layer    = "fc1"
    rank     = var.rank
    at_epoch = floor(var.epochs / 3)
  }

  prune "magnitude" {
    layers     = ["fc2"]
    target     = 0.8
    from_epoch = var.epochs / 3
    to_epoch   = var.epochs * 2 / 3
  }
}
