//go:build !unix

package bench

import "time"

// processCPU is 0 where the process's CPU time is not read: the bench then
// reports no CPU per record.
func processCPU() time.Duration { return 0 }
