# ResNet-20 on Fashion-MNIST compressed to a target: at most 30 % of the dense model's latency at
# batch 1 on one thread of this machine, at most 0.5 pp of validation accuracy lost. The search
# profiles the dense model here (each channel group at each width, each layer's format and
# precision), measures what each setting costs on the validation split, solves for the least-loss
# settings under the budget, fine-tunes from the dense model for `epochs` per round (pruning in the
# first half, 8-bit QAT, distilling from the dense model), measures the result and tightens if it
# missed (see docs/target.md). `-var dense=RUN/model.arrow` starts from a trained
# fashion-resnet20.hcl model; empty, the dense model is trained first (<run-dir>/dense, 30 epochs).
variable "epochs" {
  default = 10
}

variable "batch" {
  default = 128
}

variable "dense" {
  default = ""
}

job "fashion-resnet20-target" {
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
    file  = var.dense
    arch  = "resnet"
    depth = 20
    init  = "kaiming"
  }

  optimizer "sgd" {
    lr           = 0.02
    momentum     = 0.9
    weight_decay = 5e-4
    lr_schedule  = "cosine"
    no_decay     = ["bias", "norm"]
  }

  distill {
    temperature = 4
    alpha       = 0.7
  }

  target {
    latency_fraction  = 0.3
    batch             = 1
    threads           = 1
    max_accuracy_drop = 0.005
    dense_epochs      = 30
    rounds            = 2
  }
}
