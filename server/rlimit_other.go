//go:build !unix

package server

import "errors"

// OpenFileLimit is the process's RLIMIT_NOFILE.
type OpenFileLimit struct {
	// Before is the soft limit found at the call; Soft the one in force after it.
	Before, Soft, Hard uint64
}

// RaiseOpenFileLimit is only implemented on Unix.
func RaiseOpenFileLimit() (OpenFileLimit, error) {
	return OpenFileLimit{}, errors.New("open-file limits are only managed on Unix")
}
