# Language identification on 64-byte windows of fortune cookies in nine languages (Debian's
# fortune packages: en, de, es, it, pl, ru, cs, pt, zh; whole cookies held out for test), dense:
# a byte transformer — embedding of width 128 with learned positions, a convolution over each
# position's 3 bytes added to it (local n-gram features), two pre-norm blocks of
# 4-head self-attention and a GELU feed-forward layer of 512, mean pooling over the positions,
# a linear head. AdamW with warm-up on a cosine schedule, gradients clipped, no weight decay on
# biases, norms and embeddings; every language weighs alike in the loss. The dense reference
# (and the teacher) of langid-transformer-compressed.hcl.
variable "epochs" {
  default = 6
}

variable "batch" {
  default = 64
}

variable "seed" {
  default = 1
}

job "langid-transformer" {
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

  optimizer "adamw" {
    lr            = 1e-3
    weight_decay  = 0.01
    warmup_epochs = 0.25
    lr_schedule   = "cosine"
    clip_norm     = 1
    no_decay      = ["bias", "norm", "embedding"]
  }
}
