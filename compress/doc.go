// Package compress owns the "what" of compression: which weights a pruning
// decision removes. Masks are computed here, in one place, from the
// weights, and are applied identically wherever the weights live (the
// trainer's optimizers hold masked weights, and their optimizer state, at
// exactly zero).
//
// A mask holds one byte per weight: 1 keeps it, 0 prunes it.
package compress
