# LeNet-300-100 on MNIST distilled from an ensemble: three 784-1200-1200-10
# teachers (dropout, shifts; seeds 1, 2, 3) trained first inside the run
# directory (<run-dir>/teacher-1 … teacher-3), the student trained against
# the mean of their logits at T = 2.
variable "epochs" {
  default = 30
}

variable "batch" {
  default = 128
}

variable "teacher_epochs" {
  default = 10
}

job "mnist-lenet300-kd-ensemble" {
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
    count         = 3
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
}
