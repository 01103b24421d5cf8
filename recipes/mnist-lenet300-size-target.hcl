# LeNet-300-100 on MNIST compressed to a size: a model file of at most 20 KB with at most 0.6 pp of
# validation accuracy lost (at most 1.6 % test error). The dense model (mnist-lenet300.hcl's, 30
# epochs) is trained first in <run-dir>/dense; each round fine-tunes it 15 epochs, distilling from it.
# Sparsity to 97 % is a candidate: 20 KB needs it with 4-bit weights (see docs/target.md).
variable "epochs" {
  default = 15
}

variable "batch" {
  default = 128
}

job "mnist-lenet300-size-target" {
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

  optimizer "sgd" {
    lr           = 0.05
    momentum     = 0.9
    weight_decay = 1e-4
    lr_schedule  = "cosine"
  }

  distill {
    temperature = 4
    alpha       = 0.7
  }

  target {
    model_bytes       = 20000
    batch             = 1
    threads           = 1
    max_accuracy_drop = 0.006
    dense_epochs      = 30
    rounds            = 3
    formats           = ["dense", "sparse-0.5", "sparse-0.7", "sparse-0.8", "sparse-0.9", "sparse-0.95", "sparse-0.97", "2:4"]
  }
}
