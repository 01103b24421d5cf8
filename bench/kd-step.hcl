# The KD step beside PyTorch DDP's (`torch-ddp.sh --model kd`): LeNet-300-100 learning a trained
# 784-1200-1200-10 teacher's softened outputs (T = 2, alpha 0.5) and the labels — the flagship's
# student without its pruning and quantization. For bench/data-plane.sh kd, not a shipped recipe.
variable "teacher" {
  default     = ""
  description = "the teacher's model file (a mnist-teacher.hcl run's model.arrow): required"
}

variable "epochs" {
  default = 1
}

variable "batch" {
  default = 128
}

job "kd-step" {
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
    file = var.teacher
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
