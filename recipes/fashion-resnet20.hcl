# ResNet-20 (He et al.'s ResNet-(6n+2), n = 3: the PyTorch anchor's definition) on Fashion-MNIST,
# dense: batch norms, residual additions with 1×1 projection shortcuts, random flips and shifts;
# SGD with momentum on a cosine schedule, biases and batch norms left out of weight decay. The
# dense reference (and the teacher) of fashion-resnet20-compressed.hcl. A full run takes about
# about 50 minutes on 2 cores; `-var seed=2` gives the second seed.
variable "epochs" {
  default = 30
}

variable "batch" {
  default = 128
}

variable "seed" {
  default = 1
}

job "fashion-resnet20" {
  dataset    = "fashion-mnist"
  seed       = var.seed
  epochs     = var.epochs
  batch      = var.batch
  validation = 5000

  augment {
    shift = 2
    flip  = true
  }

  model {
    arch  = "resnet"
    depth = 20
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
