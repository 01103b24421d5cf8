# A character-level language model of the King James Bible (Debian's bible-kjv; Proverbs and
# Romans held out for validation, Isaiah and John for test), dense: the shared PyTorch anchor's
# CharLM — windows of 128 bytes, byte embedding of width 128 with learned positions, two
# pre-norm blocks of 4-head causal self-attention and a GELU feed-forward layer of 512, a
# per-position head to the next byte. AdamW with warm-up on a cosine schedule, gradients
# clipped, no weight decay on biases, norms and embeddings. Five epochs are about 19 M training
# tokens. The dense reference (and the teacher) of kjv-charlm-compressed.hcl.
variable "epochs" {
  default = 5
}

variable "batch" {
  default = 32
}

variable "seed" {
  default = 1
}

job "kjv-charlm" {
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

  optimizer "adamw" {
    lr            = 2e-3
    weight_decay  = 0.01
    warmup_epochs = 0.1
    lr_schedule   = "cosine"
    min_lr        = 1e-4
    clip_norm     = 1
    no_decay      = ["bias", "norm", "embedding"]
  }
}
