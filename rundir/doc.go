// Package rundir owns a run directory and every file in it, written by one
// function and read by one function each:
//
//	<run-dir>/.lock              the advisory lock of the process running there (Lock)
//	<run-dir>/recipe.hcl         the resolved recipe (variables applied, defaults filled)
//	<run-dir>/manifest.json      lathe version and commit, Go version, engine, BLAS and core type, threads (Manifest)
//	<run-dir>/status.json        where a running job stands, rewritten as it trains (StatusWriter)
//	<run-dir>/metrics.csv        one row per epoch, written as the run goes (Metrics)
//	<run-dir>/summary.json       written atomically when the run succeeds, never half-written (Summary)
//	<run-dir>/model.arrow        the trained, compressed model (ExportModel, LoadModel)
//	<run-dir>/checkpoints/       training checkpoints, the newest N and best.arrow (Checkpointer, ReadTraining)
//	<run-dir>/sensitivity.*      a sensitivity analysis
//	<run-dir>/teacher/           a teacher the run trained, a run directory of its own
//
// Package run decides what goes into them; Prepare makes a directory ready
// for a run and refuses one that holds something else.
package rundir
