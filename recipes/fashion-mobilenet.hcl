# MobileNetV2-style network (inverted residual blocks: 1×1 expansion, 3×3 depthwise, 1×1
# projection, ReLU6, residual additions where the shapes match) on Fashion-MNIST, dense, width
# multiplier 1: flips and shifts, SGD with momentum on a cosine schedule, biases and batch norms
# left out of weight decay.
variable "epochs" {
  default = 30
}

variable "batch" {
  default = 128
}

variable "width" {
  default = 1.0
}

job "fashion-mobilenet" {
  dataset    = "fashion-mnist"
  seed       = 1
  epochs     = var.epochs
  batch      = var.batch
  validation = 5000

  augment {
    shift = 2
    flip  = true
  }

  model {
    arch  = "mobilenet"
    width = var.width
    init  = "kaiming"
  }

  optimizer "sgd" {
    lr           = 0.1
    momentum     = 0.9
    weight_decay = 4e-5
    lr_schedule  = "cosine"
    no_decay     = ["bias", "norm"]
  }
}
