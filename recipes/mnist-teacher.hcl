# The 784-1200-1200-10 teacher, regularised as Hinton et al. did: dropout on
# the hidden units (0.5) and the input (0.2), and random shifts of up to 2
# pixels. It is what the distillation recipes distil from.
variable "epochs" {
  default = 40
}

variable "batch" {
  default = 128
}

job "mnist-teacher" {
  dataset    = "mnist"
  seed       = 1
  epochs     = var.epochs
  batch      = var.batch
  validation = 5000

  augment {
    shift = 2
  }

  model {
    arch          = "teacher"
    hidden        = [1200, 1200]
    dropout       = 0.5
    input_dropout = 0.2
  }

  optimizer "sgd" {
    lr           = 0.05
    momentum     = 0.9
    nesterov     = true
    lr_schedule  = "cosine"
    warmup_epochs = 1
  }
}
