package boundedread

import (
	"bytes"
	"context"
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

// TestReadFile: regular files up to the limit are read; anything else fails at once — never
// blocking, never reading more than limit+1 bytes — with an *fs.PathError naming the path and
// saying what it is.
func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	const limit = 1 << 10
	mk := func(name string, size int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.Repeat([]byte("k"), size), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// A FIFO with a writer holding it open (and never writing) must be refused the same way.
	heldFIFO := filepath.Join(dir, "held-fifo")
	if err := syscall.Mkfifo(heldFIFO, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(heldFIFO, os.O_RDWR, 0) // O_RDWR: does not wait for a reader
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	linkToFIFO := filepath.Join(dir, "link-to-fifo")
	if err := os.Symlink(fifo, linkToFIFO); err != nil {
		t.Fatal(err)
	}
	linkToFile := filepath.Join(dir, "link-to-file")
	if err := os.Symlink(mk("target", 10), linkToFile); err != nil {
		t.Fatal(err)
	}
	sockDir, err := os.MkdirTemp("", "br") // socket paths must stay under 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	for _, tc := range []struct {
		name    string
		path    string
		limit   int64
		size    int    // expected length on success
		want    string // expected error text; "" for success
		wantErr error  // matched with errors.Is
	}{
		{name: "small file", path: mk("small", 10), limit: limit, size: 10},
		{name: "empty file", path: mk("empty", 0), limit: limit, size: 0},
		{name: "exactly the limit", path: mk("exact", limit), limit: limit, size: limit},
		{name: "one byte over", path: mk("over", limit+1), limit: limit, want: "larger than 1 KiB; refusing to read it", wantErr: ErrTooLarge},
		{name: "symlink to a file", path: linkToFile, limit: limit, size: 10},
		{name: "FIFO without writer", path: fifo, limit: limit, want: "is a named pipe (FIFO), not a regular file", wantErr: ErrNotRegular},
		{name: "FIFO with a silent writer", path: heldFIFO, limit: limit, want: "is a named pipe (FIFO), not a regular file", wantErr: ErrNotRegular},
		{name: "symlink to a FIFO", path: linkToFIFO, limit: limit, want: "is a named pipe (FIFO), not a regular file", wantErr: ErrNotRegular},
		{name: "directory", path: dir, limit: limit, want: "is a directory, not a regular file", wantErr: ErrNotRegular},
		{name: "dev zero", path: "/dev/zero", limit: limit, want: "is a character device, not a regular file", wantErr: ErrNotRegular},
		{name: "dev null", path: "/dev/null", limit: limit, want: "is a character device, not a regular file", wantErr: ErrNotRegular},
		{name: "socket", path: sock, limit: limit, want: "is a socket, not a regular file", wantErr: ErrNotRegular},
		{name: "missing", path: filepath.Join(dir, "missing"), limit: limit, want: "no such file or directory", wantErr: fs.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			data, err := ReadFile(tc.path, tc.limit)
			if took := time.Since(start); took > time.Second {
				t.Errorf("took %s", took)
			}
			if tc.want == "" {
				if err != nil || len(data) != tc.size {
					t.Fatalf("got %d bytes, %v; want %d bytes", len(data), err, tc.size)
				}
				return
			}
			if err == nil {
				t.Fatalf("read %d bytes; want error %q", len(data), tc.want)
			}
			var pe *fs.PathError
			if !errors.As(err, &pe) || pe.Path != tc.path {
				t.Errorf("error %#v is not an *fs.PathError for %s", err, tc.path)
			}
			if !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to name %s and say %q", err, tc.path, tc.want)
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v is not %v", err, tc.wantErr)
			}
		})
	}
}

// TestReadFileSizeNotTrusted: a regular file whose size fstat does not report (procfs says 0) is
// still held to the limit by the read itself.
func TestReadFileSizeNotTrusted(t *testing.T) {
	const p = "/proc/self/status"
	st, err := os.Stat(p)
	if err != nil || st.Size() != 0 || !st.Mode().IsRegular() {
		t.Skipf("%s is not a zero-size regular file here", p)
	}
	if _, err := ReadFile(p, 16); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if data, err := ReadFile(p, 1<<20); err != nil || len(data) == 0 {
		t.Fatalf("read %d bytes, %v", len(data), err)
	}
}

// TestReadAll: standard input is bounded the same way, and a reader that never ends — a pipe
// whose writer stays silent — is given up when ctx ends, with its cause.
func TestReadAll(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		limit   int64
		wantErr error
	}{
		{"under the limit", "key", 10, nil},
		{"exactly the limit", "0123456789", 10, nil},
		{"over the limit", "0123456789!", 10, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := ReadAll(t.Context(), strings.NewReader(tc.in), tc.limit)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err == nil && string(data) != tc.in {
				t.Fatalf("read %q", data)
			}
			if err != nil && !strings.Contains(err.Error(), "larger than 10 bytes") {
				t.Errorf("error %q does not state the limit", err)
			}
		})
	}
	t.Run("silent pipe, cancelled", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		cause := errors.New("interrupt signal received")
		ctx, cancel := context.WithCancelCause(t.Context())
		time.AfterFunc(50*time.Millisecond, func() { cancel(cause) })
		start := time.Now()
		if _, err := ReadAll(ctx, r, 10); !errors.Is(err, cause) {
			t.Fatalf("err = %v, want %v", err, cause)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("returned %s after start, want right after the cancel", took)
		}
	})
}

func TestSize(t *testing.T) {
	for n, want := range map[int64]string{1 << 20: "1 MiB", 16 << 10: "16 KiB", 1536: "1536 bytes", 100: "100 bytes", 3 << 20: "3 MiB"} {
		if got := Size(n); got != want {
			t.Errorf("Size(%d) = %q, want %q", n, got, want)
		}
	}
}
