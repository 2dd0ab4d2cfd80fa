package signer

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// staleSocket leaves a socket file at path that nobody listens on: a signer that died.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	_ = l.Close()
}

// liveSocket listens at path until the test ends.
func liveSocket(t *testing.T, path string) net.Listener {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestListen(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, path string) (check func(t *testing.T))
		wantErr string // "" for success
	}{
		{name: "fresh path"},
		{
			name: "missing directory",
			prepare: func(t *testing.T, path string) func(*testing.T) {
				if err := os.Remove(filepath.Dir(path)); err != nil {
					t.Fatal(err)
				}
				return nil
			},
			wantErr: "does not exist",
		},
		{
			name: "parent is a file",
			prepare: func(t *testing.T, path string) func(*testing.T) {
				dir := filepath.Dir(path)
				if err := os.Remove(dir); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(dir, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				return nil
			},
			wantErr: "is not a directory",
		},
		{
			name: "regular file is never removed",
			prepare: func(t *testing.T, path string) func(*testing.T) {
				if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
					t.Fatal(err)
				}
				return func(t *testing.T) {
					if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
						t.Fatalf("the regular file was touched: %q, %v", b, err)
					}
				}
			},
			wantErr: "not a socket (regular file)",
		},
		{
			name: "directory",
			prepare: func(t *testing.T, path string) func(*testing.T) {
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
				return nil
			},
			wantErr: "not a socket (directory)",
		},
		{
			name: "symlink to a stale socket is not followed",
			prepare: func(t *testing.T, path string) func(*testing.T) {
				target := filepath.Join(filepath.Dir(path), "target.sock")
				staleSocket(t, target)
				if err := os.Symlink(target, path); err != nil {
					t.Fatal(err)
				}
				return func(t *testing.T) {
					if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != fs.ModeSymlink {
						t.Fatalf("the symlink was touched: %v %v", fi, err)
					}
				}
			},
			wantErr: "not a socket (symbolic link)",
		},
		{
			name: "stale socket is replaced",
			prepare: func(t *testing.T, path string) func(*testing.T) {
				staleSocket(t, path)
				return nil
			},
		},
		{
			name: "live socket is refused and keeps working",
			prepare: func(t *testing.T, path string) func(*testing.T) {
				l := liveSocket(t, path)
				go func() {
					for {
						c, err := l.Accept()
						if err != nil {
							return
						}
						_ = c.Close()
					}
				}()
				return func(t *testing.T) {
					c, err := net.DialTimeout("unix", path, time.Second)
					if err != nil {
						t.Fatalf("the live signer's socket was disturbed: %v", err)
					}
					_ = c.Close()
				}
			},
			wantErr: "another signer is listening",
		},
		{
			name: "path too long",
			prepare: func(t *testing.T, path string) func(*testing.T) {
				return nil
			},
			wantErr: "a unix socket path holds at most",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := socketPath(t)
			if tc.name == "path too long" {
				path = filepath.Join(filepath.Dir(path), strings.Repeat("x", 120))
			}
			var check func(*testing.T)
			if tc.prepare != nil {
				check = tc.prepare(t, path)
			}
			l, err := Listen(path)
			if tc.wantErr != "" {
				if err == nil {
					_ = l.Close()
					t.Fatalf("Listen succeeded, want an error containing %q", tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) {
					t.Fatalf("error %q does not name the path and %q", err, tc.wantErr)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				assertServing(t, l, path)
			}
			if check != nil {
				check(t)
			}
			assertNoTempDirs(t, filepath.Dir(path))
		})
	}
}

// assertServing checks the socket's type and mode, its reported address, and that it accepts.
func assertServing(t *testing.T, l net.Listener, path string) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != socketMode {
		t.Fatalf("socket mode = %s, want a socket with %o", fi.Mode(), socketMode)
	}
	if l.Addr().String() != path {
		t.Fatalf("Addr = %s, want %s", l.Addr(), path)
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			_ = c.Close()
		}
		accepted <- err
	}()
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		t.Fatalf("dialing the new socket: %v", err)
	}
	_ = c.Close()
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
}

// assertNoTempDirs: the private binding directory never outlives Listen.
func assertNoTempDirs(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".s") {
			t.Fatalf("temporary directory %s left behind", e.Name())
		}
	}
}

// TestListenModeIgnoresUmask: the socket is 0600 even with umask 0, and is never reachable with
// another mode (it is bound in a 0700 directory and renamed into place).
func TestListenModeIgnoresUmask(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := socketPath(t)
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	assertServing(t, l, path)
}

// TestListenerCloseRemovesOnlyItsSocket: Close removes the socket, but not one another signer
// put at the same path meanwhile.
func TestListenerCloseRemovesOnlyItsSocket(t *testing.T) {
	path := socketPath(t)
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket still there after Close: %v", err)
	}

	l, err = Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	// Someone replaces the socket (here: by hand, as a second signer racing would).
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	other := liveSocket(t, path)
	_ = l.Close()
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("Close removed another listener's socket: %v", err)
	}
	_ = other
}
