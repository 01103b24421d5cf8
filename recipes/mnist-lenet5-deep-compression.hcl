# LeNet-5 (Caffe's, 431 k parameters) compressed as Deep Compression did:
# AGP prunes every layer to 92 % overall (one global threshold), then the
# weights learn quantization per channel, 8 → 6 → 4 bits, while pruning
# finishes. model.arrow stores the survivors as Huffman-coded 4-bit codes
# with Huffman-coded index gaps.
variable "epochs" {
  default = 16
}

variable "batch" {
  default = 128
}

job "mnist-lenet5-deep-compression" {
  dataset    = "mnist"
  seed       = 1
  epochs     = var.epochs
  batch      = var.batch
  validation = 5000

  augment {
    shift = 1
  }

  model {
    arch = "lenet5"
  }

  optimizer "sgd" {
    lr           = 0.05
    momentum     = 0.9
    weight_decay = 5e-4
    lr_schedule  = "cosine"
  }

  prune "magnitude" {
    layers       = ["conv1", "conv2", "fc1", "fc2"]
    target       = 0.92
    scope        = "global"
    schedule     = "agp"
    from_epoch   = var.epochs / 16
    to_epoch     = var.epochs * 5 / 8
    every_epochs = 0.25
  }

  quantize {
    layers         = ["conv1", "conv2", "fc1", "fc2"]
    bits           = 8
    from_epoch     = var.epochs / 2
    gradual        = [6, 4]
    gradual_epochs = [var.epochs * 5 / 8, var.epochs * 3 / 4]
    granularity    = "per_channel"
    symmetric      = true
  }
}
