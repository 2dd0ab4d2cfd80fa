//go:build unix

package server

import (
	"syscall"
	"testing"
)

func TestRaiseOpenFileLimit(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	if orig.Max < 128 {
		t.Skipf("hard limit %d: too low to lower the soft one for the test", orig.Max)
	}
	lowered := syscall.Rlimit{Cur: orig.Max / 2, Max: orig.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lowered); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) }()
	got, err := RaiseOpenFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	want := OpenFileLimit{Before: orig.Max / 2, Soft: orig.Max, Hard: orig.Max}
	if got != want {
		t.Errorf("RaiseOpenFileLimit = %+v, want %+v", got, want)
	}
	var now syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &now); err != nil {
		t.Fatal(err)
	}
	if now.Cur != orig.Max {
		t.Errorf("soft limit %d after raising, want the hard limit %d", now.Cur, orig.Max)
	}
}
