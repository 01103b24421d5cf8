# The King James Bible character model (as kjv-charlm.hcl), compressed: half of every attention
# layer's heads pruned, 70 % of the feed-forward layers' weights pruned (unstructured, by
# magnitude), both on Zhu & Gupta's schedule, distilled from the dense model throughout. The run
# ends by thinning the heads away; the feed-forward layers' zeros are stored sparse.
# `-var teacher=RUN/model.arrow` distils from a trained kjv-charlm.hcl run; left empty, the run
# trains its teacher first (<run-dir>/teacher).
variable "epochs" {
  default = 5
}

variable "batch" {
  default = 32
}

variable "seed" {
  default = 1
}

variable "teacher" {
  default = ""
}

variable "teacher_epochs" {
  default = 5
}

job "kjv-charlm-compressed" {
  dataset    = "kjv"
  seed       = var.seed
  epochs     = var.epochs
  batch      = var.batch
  eval_batch = 64

  model {
    arch   = "transformer"
    dim    = 128
    heads  = 4
    blocks = 2
    mlp    = 512
  }

  teacher {
    file   = var.teacher
    arch   = "transformer"
    dim    = 128
    heads  = 4
    blocks = 2
    mlp    = 512
    epochs = var.teacher_epochs
  }

  distill {
    temperature = 1
    alpha       = 0.5
  }

  optimizer "adamw" {
    lr            = 2e-3
    weight_decay  = 0.01
    warmup_epochs = 0.1
    lr_schedule   = "cosine"
    min_lr        = 1e-4
    clip_norm     = 1
    no_decay      = ["bias", "norm", "embedding"]
  }

  prune "structured" {
    layers       = ["b*.attn"]
    granularity  = "heads"
    target       = 0.5
    schedule     = "agp"
    from_epoch   = var.epochs / 10
    to_epoch     = var.epochs * 3 / 5
    every_epochs = 0.25
  }

  prune "magnitude" {
    layers       = ["b*.fc1", "b*.fc2"]
    target       = 0.7
    schedule     = "agp"
    from_epoch   = var.epochs / 10
    to_epoch     = var.epochs * 3 / 5
    every_epochs = 0.25
  }
}
