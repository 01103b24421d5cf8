# The recipe that wrote the seed files in this directory (a real, tiny
# MNIST run): coordinator --recipe checkpoint/testdata/seed.hcl --run-dir D,
# then D/model.arrow → model.arrow, D/checkpoints/step-000000120.arrow →
# training.arrow.
job "seed" {
  epochs     = 3
  batch      = 250
  validation = 50000
  model {
    arch   = "mlp"
    hidden = [16]
  }
  prune "magnitude" {
    layers     = ["fc1", "fc2"]
    target     = 0.8
    from_epoch = 0
    to_epoch   = 1.5
  }
  quantize {
    layers      = ["fc1", "fc2"]
    bits        = 4
    from_epoch  = 2
    activations = 8
  }
}
