# LeNet-300-100 (784-300-100-10) on MNIST, dense, trained like the PyTorch
# anchor: SGD with momentum 0.9, cross-entropy, batch 128 by default.
# Random shifts of up to 2 pixels regularise it, as in Hinton et al.
variable "epochs" {
  default     = 30
  description = "passes over the 55 000 training images"
}

variable "batch" {
  default = 128
}

variable "lr" {
  default = 0.05
}

job "mnist-lenet300" {
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
    lr           = var.lr
    momentum     = 0.9
    weight_decay = 1e-4
    lr_schedule  = "cosine"
  }
}
