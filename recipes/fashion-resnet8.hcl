# ResNet-8 (He et al.'s ResNet-(6n+2), n = 1: the PyTorch anchor's definition) on Fashion-MNIST:
# batch norms, residual additions, random flips and shifts; SGD with momentum on a cosine
# schedule, biases and batch norms left out of weight decay. The small CNN of the CNN issue:
# a full run takes about 40 minutes on 2 cores.
variable "epochs" {
  default = 30
}

variable "batch" {
  default = 128
}

job "fashion-resnet8" {
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
    arch  = "resnet"
    depth = 8
    init  = "kaiming"
  }

  optimizer "sgd" {
    lr           = 0.1
    momentum     = 0.9
    weight_decay = 5e-4
    lr_schedule  = "cosine"
    no_decay     = ["bias", "norm"]
  }
}
