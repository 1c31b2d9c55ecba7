//go:build !linux

package datadir

// lockHolder: only Linux says who holds a flock (/proc/locks); elsewhere
// RunningNode reads the pid the node wrote.
func lockHolder(string) (int, bool) { return 0, false }
