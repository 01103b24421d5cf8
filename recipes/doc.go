// Package recipes owns lathe's recipe language: an HCL file with `variable`
// blocks (overridden with -var name=value, as Terraform does) and one `job`
// block. Load decodes it into a Job with every default filled in one place
// (Defaults) and every value checked; mistakes are diagnostics naming the
// file, line and column. Each decoded field keeps its source range
// (Job.Ranges), so checks made later can still point at the recipe line.
//
// The shipped recipes live beside this file (*.hcl); a test loads each one.
package recipes
