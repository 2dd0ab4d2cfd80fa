package signer

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// probeTimeout bounds the dial that tells a live socket from a stale one. A listener that does not
// accept within it is busy, not gone, and is treated as live.
const probeTimeout = time.Second

// socketMode lets only the signer's own user (root on a control-plane node, next to
// kube-apiserver) connect: whoever can connect can mint any service-account token.
const socketMode = 0o600

// maxSocketPath is the longest path a sockaddr_un holds (sun_path minus its NUL).
func maxSocketPath() int {
	if runtime.GOOS == "linux" {
		return 107
	}
	return 103 // the BSDs and macOS
}

// Listen creates the signer's unix socket at path, mode 0600, and listens on it.
//
//   - The directory must exist: it is usually a hostPath shared with kube-apiserver, and creating
//     it here would hide a mount that is missing.
//   - A path that exists and is not a socket (a file, a directory, a symlink) is an error; it is
//     never removed.
//   - A socket nobody listens on (a dial is refused: a signer that died) is replaced.
//   - A socket somebody listens on is an error: another signer is running.
//
// The socket is bound inside a fresh private directory (0700) next to path, chmod'ed to 0600 and
// then renamed onto path, so it is never reachable with any other mode, whatever the umask, and a
// stale socket is replaced in one atomic rename with no moment where path is missing. The race
// accepted: two signers started on one path at the same instant may both find it free (or stale)
// and the second rename wins; the first then serves an unreachable inode. The liveness check and
// the 0600 mode make that an operator error (two signers configured on one socket), not something
// a third party can provoke.
//
// Closing the listener removes the socket, unless another signer has replaced it meanwhile.
func Listen(path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("listening for the external JWT signer: no socket path")
	}
	if n := len(path); n > maxSocketPath() {
		return nil, fmt.Errorf("listening on %s: path is %d bytes, a unix socket path holds at most %d", path, n, maxSocketPath())
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("listening on %s: directory %s does not exist (create it, or mount the directory shared with kube-apiserver)", path, dir)
	case err != nil:
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("listening on %s: %s is not a directory", path, dir)
	}
	if err := checkReplaceable(path); err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	l, err := bindPrivate(dir, path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	return l, nil
}

// checkReplaceable returns nil if path is absent or a stale socket.
func checkReplaceable(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspecting the existing path: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("path exists and is not a socket (%s); refusing to replace it", describeType(fi.Mode()))
	}
	c, err := net.DialTimeout("unix", path, probeTimeout)
	switch {
	case err == nil:
		_ = c.Close()
		return errors.New("another signer is listening on this socket")
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, fs.ErrNotExist):
		return nil // stale, or removed since the Lstat
	default:
		return fmt.Errorf("probing the existing socket: %w", err)
	}
}

func describeType(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m.IsDir():
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	}
	return m.Type().String()
}

// bindPrivate binds a socket in a private directory under dir, sets its mode and renames it onto
// path.
func bindPrivate(dir, path string) (net.Listener, error) {
	tmpDir, err := os.MkdirTemp(dir, ".s") // 0700; a short name, as socket paths are short
	if err != nil {
		return nil, fmt.Errorf("creating a private directory for binding: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	if len(tmp) > maxSocketPath() {
		return nil, fmt.Errorf("the temporary socket path %s is longer than %d bytes: use a shorter directory", tmp, maxSocketPath())
	}
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("binding: %w", err)
	}
	// The listener would unlink tmp, a name that no longer exists after the rename.
	ul.SetUnlinkOnClose(false)
	fail := func(what string, err error) (net.Listener, error) {
		_ = ul.Close()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := os.Chmod(tmp, socketMode); err != nil {
		return fail("setting the socket's mode", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail("moving the socket into place", err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail("inspecting the new socket", err)
	}
	return &socketListener{UnixListener: ul, path: path, info: fi}, nil
}

// socketListener removes its socket on Close, but only the one it created.
type socketListener struct {
	*net.UnixListener
	path string
	info fs.FileInfo
	once sync.Once
}

// Addr is the socket's final path, not the temporary name it was bound at.
func (l *socketListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.info) {
			_ = os.Remove(l.path)
		}
	})
	return err
}
