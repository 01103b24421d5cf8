# LeNet-5 on MNIST compressed to a target: at most 30 % of the dense model's latency at batch 1
# on one thread of this machine, at most 0.5 pp of validation accuracy lost. The search profiles
# the dense model here (each layer under each channel width, sparse / 2:4 format and precision),
# measures what each setting costs on the validation split, solves for the least-loss settings
# under the budget, fine-tunes from the dense model for `epochs` (pruning in the first half,
# distilling from the dense model), measures the result and tightens if it missed (see
# docs/target.md). `-var dense=RUN/model.arrow` starts from a trained mnist-lenet5.hcl model;
# empty, the dense model is trained first (<run-dir>/dense, 12 epochs).
variable "epochs" {
  default = 4
}

variable "batch" {
  default = 128
}

variable "dense" {
  default = ""
}

job "mnist-lenet5-target" {
  dataset    = "mnist"
  seed       = 1
  epochs     = var.epochs
  batch      = var.batch
  validation = 5000

  augment {
    shift = 1
  }

  model {
    file = var.dense
    arch = "lenet5"
  }

  optimizer "sgd" {
    lr           = 0.01
    momentum     = 0.9
    weight_decay = 5e-4
    lr_schedule  = "cosine"
  }

  distill {
    temperature = 4
    alpha       = 0.5
  }

  target {
    latency_fraction  = 0.3
    batch             = 1
    threads           = 1
    max_accuracy_drop = 0.005
    dense_epochs      = 12
    rounds            = 3
  }
}
