# LeNet-5 (Caffe / Deep Compression) on MNIST pruned to 90 % weight sparsity
# with AGP and one global magnitude threshold (so the 400 000-weight fc1 gives
# up the most, as in Deep Compression), then fine-tuned.
variable "epochs" {
  default = 12
}

variable "batch" {
  default = 128
}

variable "target" {
  default = 0.9
}

job "mnist-lenet5-agp" {
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

  prune "magnitude" {
    layers       = ["conv1", "conv2", "fc1", "fc2"]
    target       = var.target
    scope        = "global"
    schedule     = "agp"
    from_epoch   = var.epochs / 12
    to_epoch     = var.epochs * 2 / 3
    every_epochs = 0.25
  }
}
