# LeNet-5 on Fashion-MNIST with 2:4 semi-structured sparsity and 4-bit
# weights: dense for two epochs, then every group of 4 consecutive weights
# along each layer's input keeps its 2 largest, then weights train with
# 8-bit and finally 4-bit fake quantization (per output channel).
variable "epochs" {
  default = 15
}

variable "batch" {
  default = 128
}

job "fashion-lenet5-2of4-int4" {
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

  prune "nm" {
    layers     = ["conv2", "fc1", "fc2"]
    n          = 2
    m          = 4
    schedule   = "one_shot"
    from_epoch = var.epochs * 2 / 15
  }

  quantize {
    layers         = ["conv1", "conv2", "fc1", "fc2"]
    bits           = 8
    from_epoch     = var.epochs / 3
    gradual        = [4]
    gradual_epochs = [var.epochs / 2]
    granularity    = "per_channel"
    symmetric      = true
  }
}
