# LeNet-300-100 on MNIST with 4-bit weights learned by quantization-aware
# training: float for 5 epochs, then fake-quantized weights (symmetric, per
# output channel) at 8, 6 and finally 4 bits (gradual quantization), the
# straight-through estimator carrying gradients to the float latent weights.
# Hidden activations are quantized to 8 bits (unsigned, ranges from
# moving-average observers, frozen for the last fifth of the run).
# Compare with the 4-bit post-training quantization of mnist-lenet300.hcl
# (its summary.json's ptq_test_accuracy).
variable "epochs" {
  default = 30
}

variable "batch" {
  default = 128
}

job "mnist-lenet300-qat4" {
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

  quantize {
    layers         = ["fc1", "fc2", "fc3"]
    bits           = 8
    from_epoch     = var.epochs / 6
    gradual        = [6, 4]
    gradual_epochs = [var.epochs / 3, var.epochs / 2]
    granularity    = "per_channel"
    symmetric      = true
    activations    = 8
    freeze_observers_epoch = var.epochs * 4 / 5
  }
}
