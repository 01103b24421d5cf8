# ResNet-20 on Fashion-MNIST, compressed: channels pruned by dependency groups (each residual
# stage's channels pruned as one group across its additions and shortcut, each block's inner
# channels as another) to 60 % of every group, then 8-bit quantization-aware training of
# weights and activations with the batch norms folded into the convolutions, distilled from a
# dense ResNet-20 throughout. The model file holds the thinned, folded network with integer
# weights. `-var teacher=RUN/model.arrow` distils from a trained fashion-resnet20.hcl run; left
# empty, the run trains its teacher first (<run-dir>/teacher).
variable "epochs" {
  default = 30
}

variable "batch" {
  default = 128
}

variable "seed" {
  default = 1
}

variable "teacher" {
  default = ""
}

variable "teacher_epochs" {
  default = 30
}

job "fashion-resnet20-compressed" {
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

  teacher {
    file   = var.teacher
    arch   = "resnet"
    depth  = 20
    init   = "kaiming"
    epochs = var.teacher_epochs
  }

  distill {
    temperature = 4
    alpha       = 0.7
  }

  optimizer "sgd" {
    lr           = 0.1
    momentum     = 0.9
    weight_decay = 5e-4
    lr_schedule  = "cosine"
    no_decay     = ["bias", "norm"]
  }

  # Every channel group the blocks create: conv1 and block*.conv2 / .sc share the stages'
  # residual groups, block*.conv1 each own one.
  prune "structured" {
    layers       = ["conv1", "block*"]
    granularity  = "groups"
    target       = 0.4
    schedule     = "agp"
    from_epoch   = var.epochs / 30
    to_epoch     = var.epochs * 2 / 5
    every_epochs = 0.5
  }

  quantize {
    layers                 = ["*"]
    bits                   = 8
    from_epoch             = var.epochs / 2
    activations            = 8
    freeze_observers_epoch = var.epochs * 9 / 10
    freeze_bn_epoch        = var.epochs * 9 / 10
  }
}
