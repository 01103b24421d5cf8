# LeNet-5 (Caffe / Deep Compression variant) on Fashion-MNIST, from Debian's
# dataset-fashion-mnist package. Dropout on fc1 keeps it from over-fitting.
variable "epochs" {
  default = 15
}

variable "batch" {
  default = 128
}

job "fashion-lenet5" {
  dataset    = "fashion-mnist"
  seed       = 1
  epochs     = var.epochs
  batch      = var.batch
  validation = 5000

  model {
    arch    = "lenet5"
    dropout = 0.3
  }

  optimizer "sgd" {
    lr           = 0.05
    momentum     = 0.9
    weight_decay = 5e-4
    lr_schedule  = "cosine"
  }
}
