// Package run owns a job's run directory and runs a job in-process: it
// loads the data, builds the model, engine, optimizer and policies from the
// recipe, trains, and writes what a run leaves behind:
//
//	<run-dir>/recipe.hcl     the resolved recipe (variables applied, defaults filled)
//	<run-dir>/manifest.json  lathe version and commit, Go version, engine, BLAS and core type, threads
//	<run-dir>/metrics.csv    one row per epoch, written as the run goes
//	<run-dir>/summary.json   written atomically when the run succeeds, never half-written
//
// The cluster issue puts NATS under this without changing cmd/coordinator's
// command line.
package run
