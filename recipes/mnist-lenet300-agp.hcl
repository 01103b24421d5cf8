# LeNet-300-100 on MNIST pruned during training to 92 % weight sparsity with
# Zhu & Gupta's automated gradual pruning (AGP): one magnitude threshold over
# all three weight matrices, raised on a cubic schedule four times an epoch
# from 1/15 to 2/3 of the run (epochs 2 to 20 of 30), then fine-tuning at the
# final sparsity for the last third.
variable "epochs" {
  default = 30
}

variable "batch" {
  default = 128
}

variable "target" {
  default = 0.92
}

job "mnist-lenet300-agp" {
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

  prune "magnitude" {
    layers       = ["fc1", "fc2", "fc3"]
    target       = var.target
    scope        = "global"
    schedule     = "agp"
    from_epoch   = var.epochs / 15
    to_epoch     = var.epochs * 2 / 3
    every_epochs = 0.25
  }
}
