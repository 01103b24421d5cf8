# The flagship: a 784-1200-1200-10 teacher (dropout, shifts) trained first
# inside the run directory (<run-dir>/teacher), then distilled into
# LeNet-300-100 while AGP prunes it to 92 % (one global threshold) and its
# weights learn quantization (per channel): 8 bits from halfway through,
# then 6 and 4 (gradual). Its model.arrow is Deep Compression's 40×.
# T = 2: a gentle temperature, since high temperatures have cost low-bit
# students accuracy.
variable "epochs" {
  default = 30
}

variable "batch" {
  default = 128
}

variable "teacher_epochs" {
  default = 20
}

job "mnist-lenet300-kd-prune-qat" {
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

  teacher {
    arch          = "teacher"
    hidden        = [1200, 1200]
    dropout       = 0.5
    input_dropout = 0.2
    epochs        = var.teacher_epochs
  }

  distill {
    temperature = 2
    alpha       = 0.5
  }

  optimizer "sgd" {
    lr           = 0.05
    momentum     = 0.9
    weight_decay = 1e-4
    lr_schedule  = "cosine"
  }

  prune "magnitude" {
    layers       = ["fc1", "fc2", "fc3"]
    target       = 0.92
    scope        = "global"
    schedule     = "agp"
    from_epoch   = var.epochs / 15
    to_epoch     = var.epochs * 2 / 3
    every_epochs = 0.25
  }

  quantize {
    layers      = ["fc1", "fc2", "fc3"]
    bits           = 8
    from_epoch     = var.epochs / 2
    gradual        = [6, 4]
    gradual_epochs = [var.epochs * 3 / 5, var.epochs * 7 / 10]
    granularity = "per_channel"
    symmetric   = true
  }
}
