//go:build !unix

package rundir

import "os"

// tryLock does nothing where flock is missing: run directories are not
// guarded there.
func tryLock(*os.File) error { return nil }
