# LeNet-300-100 on MNIST with per-layer pruning targets chosen by a
# sensitivity analysis: after 5 dense epochs each layer alone is pruned to
# each sparsity below and evaluated on the validation split (never the test
# split); sensitivity.csv / sensitivity.json in the run directory hold the
# table, and each layer's suggestion — the largest sparsity that kept
# validation accuracy within 0.5 points — becomes its AGP target.
variable "epochs" {
  default = 30
}

variable "batch" {
  default = 128
}

job "mnist-lenet300-sensitivity" {
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

  sensitivity {
    layers     = ["fc1", "fc2", "fc3"]
    sparsities = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98]
    tolerance  = 0.005
    at_epoch   = max(1, floor(var.epochs / 6))
  }

  prune "magnitude" {
    layers       = ["fc1", "fc2", "fc3"]
    targets_from = "sensitivity"
    scope        = "layer"
    from_epoch   = max(1, floor(var.epochs / 6))
    to_epoch     = max(1, var.epochs * 2 / 3)
  }
}
