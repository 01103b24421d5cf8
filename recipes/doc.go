// Package recipes owns lathe's recipe language: an HCL file with `variable`
// blocks (overridden with -var name=value, as Terraform does) and one `job`
// block. Load decodes it into a Job with every default filled in one place
// (Defaults) and every value checked; mistakes are diagnostics naming the
// file, line and column. Each decoded field keeps its source range
// (Job.Ranges), so checks made later can still point at the recipe line.
//
// The format is described once: a table per block (job.go) gives each
// attribute's name, the Job field it fills, its default, the values it
// allows and when it is written back. Parse, Defaults and Job.HCL walk the
// same tables; checks across fields and blocks are code beside the decoder
// (load.go). The package imports only the HCL libraries: names that other
// packages know (architectures, optimizers, datasets) are checked by the
// run's plan, which points back here through Job.Ranges.
//
// The shipped recipes live beside this file (*.hcl); a test loads each one.
package recipes
