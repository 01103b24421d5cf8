# Deep Compression's pipeline on LeNet-300-100, in one run: AGP prunes the
# weights to 92 % (one global threshold), then k-means shares each layer's
# surviving weights among 16 values (4-bit indices) whose centroids train
# for the last quarter of the run. model.arrow stores each weight as a
# 16-entry codebook with Huffman-coded indices and index gaps.
variable "epochs" {
  default = 30
}

variable "batch" {
  default = 128
}

job "mnist-lenet300-kmeans" {
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

  prune "magnitude" {
    layers       = ["fc1", "fc2", "fc3"]
    target       = 0.92
    scope        = "global"
    schedule     = "agp"
    from_epoch   = var.epochs / 15
    to_epoch     = var.epochs * 2 / 3
    every_epochs = 0.25
  }

  cluster {
    layers     = ["fc1", "fc2", "fc3"]
    clusters   = 16
    from_epoch = var.epochs * 3 / 4
  }
}
