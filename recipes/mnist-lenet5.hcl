# LeNet-5 as in Caffe and Deep Compression (conv 5x5x20, max-pool, conv
# 5x5x50, max-pool, fc 500, fc 10; 431 080 parameters) on MNIST.
variable "epochs" {
  default = 12
}

variable "batch" {
  default = 128
}

job "mnist-lenet5" {
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
}
