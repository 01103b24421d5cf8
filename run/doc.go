// Package run turns a decoded recipe into a plan (Build) and runs it: it
// loads the data, builds the model, engine, optimizer and policies, trains
// through trainer's one loop, and writes what a run leaves behind into its
// run directory (package rundir).
//
// A job runs in one of three roles, each a small runner beside the shared
// preparation (execute) and training (jobRun.run): the local run
// (local.go, Execute), the coordinator of a cluster (coordinator.go,
// Execute with Options.Cluster) and a worker's replica of a cluster phase
// (replica.go, ReplicaPhase).
package run
