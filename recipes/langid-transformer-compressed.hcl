# Language identification (as langid-transformer.hcl), compressed: half of every attention
# layer's heads pruned (ranked by the norm of their rows of q, k, v and columns of o, gradually
# on Zhu & Gupta's schedule), 8-bit quantization-aware training of every weight (embeddings
# included), distilled from the dense transformer throughout. The run ends by thinning: the
# model file holds attention layers with two heads of four, their projections half as wide.
# `-var teacher=RUN/model.arrow` distils from a trained langid-transformer.hcl run; left empty,
# the run trains its teacher first (<run-dir>/teacher).
variable "epochs" {
  default = 6
}

variable "batch" {
  default = 64
}

variable "seed" {
  default = 1
}

variable "teacher" {
  default = ""
}

variable "teacher_epochs" {
  default = 6
}

job "langid-transformer-compressed" {
  dataset    = "langid"
  seed       = var.seed
  epochs     = var.epochs
  batch      = var.batch
  validation = 5000
  eval_batch = 500
  # Portuguese has a tenth of Russian's windows: every language weighs alike.
  class_balance = true

  model {
    arch   = "transformer"
    dim    = 128
    heads  = 4
    blocks = 2
    mlp    = 512
    ngram  = 3
  }

  teacher {
    file   = var.teacher
    arch   = "transformer"
    dim    = 128
    heads  = 4
    blocks = 2
    mlp    = 512
    ngram  = 3
    epochs = var.teacher_epochs
  }

  distill {
    temperature = 2
    alpha       = 0.5
  }

  optimizer "adamw" {
    lr            = 1e-3
    weight_decay  = 0.01
    warmup_epochs = 0.25
    lr_schedule   = "cosine"
    clip_norm     = 1
    no_decay      = ["bias", "norm", "embedding"]
  }

  prune "structured" {
    layers       = ["b*.attn"]
    granularity  = "heads"
    target       = 0.5
    schedule     = "agp"
    from_epoch   = var.epochs / 16
    to_epoch     = var.epochs / 2
    every_epochs = 0.25
  }

  quantize {
    layers     = ["*"]
    bits       = 8
    from_epoch = var.epochs * 5 / 8
  }
}
