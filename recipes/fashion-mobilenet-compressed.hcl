# The MobileNetV2-style network of fashion-mobilenet.hcl, compressed: every block's expanded
# channels (the 1×1 expansion's outputs, carried through the depthwise convolution into the
# projection: one dependency group each) pruned to half, then 8-bit quantization-aware training of
# weights and activations with the batch norms folded into the convolutions, distilled from a
# dense MobileNet throughout. `-var teacher=RUN/model.arrow` distils from a trained
# fashion-mobilenet.hcl run; left empty, the run trains its teacher first (<run-dir>/teacher).
variable "epochs" {
  default = 30
}

variable "batch" {
  default = 128
}

variable "teacher" {
  default = ""
}

variable "teacher_epochs" {
  default = 30
}

job "fashion-mobilenet-compressed" {
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
    width = 1.0
    init  = "kaiming"
  }

  teacher {
    file   = var.teacher
    arch   = "mobilenet"
    width  = 1.0
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
    weight_decay = 4e-5
    lr_schedule  = "cosine"
    no_decay     = ["bias", "norm"]
  }

  prune "structured" {
    layers       = ["block*.expand"]
    granularity  = "groups"
    target       = 0.5
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
