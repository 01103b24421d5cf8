# Bring your own model: a ResNet-8 trained in PyTorch on Fashion-MNIST (onnx/testdata/
# train_resnet.py, exported to ONNX with its batch norms), imported and compressed by lathe —
# channels pruned by dependency groups to 60 % of every group, then 8-bit quantization-aware
# training of weights and activations with the batch norms folded, distilled from the imported
# model itself throughout. Layers keep the PyTorch modules' names (stem.0, blocks.0.c1, …).
variable "epochs" {
  default = 6
}

variable "batch" {
  default = 128
}

variable "seed" {
  default = 1
}

variable "model" {
  default = "../onnx/testdata/fashion_resnet8.onnx"
}

job "fashion-resnet8-onnx-compressed" {
  dataset    = "fashion-mnist"
  seed       = var.seed
  epochs     = var.epochs
  batch      = var.batch
  validation = 5000

  model {
    file = var.model
  }

  teacher {
    file = var.model
  }

  distill {
    temperature = 4
    alpha       = 0.7
  }

  optimizer "sgd" {
    lr           = 0.02
    momentum     = 0.9
    weight_decay = 5e-4
    lr_schedule  = "cosine"
    no_decay     = ["bias", "norm"]
  }

  prune "structured" {
    layers       = ["stem.0", "blocks*"]
    granularity  = "groups"
    target       = 0.4
    schedule     = "agp"
    from_epoch   = var.epochs / 12
    to_epoch     = var.epochs / 2
    every_epochs = 0.25
  }

  quantize {
    layers                 = ["*"]
    bits                   = 8
    from_epoch             = var.epochs / 2
    activations            = 8
    freeze_observers_epoch = var.epochs * 9 / 10
    freeze_bn_epoch        = var.epochs * 9 / 10
  }
}
