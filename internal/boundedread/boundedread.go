// Package boundedread reads small inputs that come from outside the process — key files, token
// files, standard input — so that whatever sits at the path can neither stall the reader nor
// exhaust its memory.
//
// A plain os.ReadFile is neither: opening a named pipe blocks until a writer appears (for ever, and
// a blocked open cannot be interrupted), reading a character device such as /dev/zero never ends,
// and a large file is read whole. ReadFile opens without blocking (O_NONBLOCK: an open of a FIFO
// returns at once), checks with fstat what it actually opened (not what a path lookup said a moment
// earlier), refuses anything but a regular file, and reads at most limit+1 bytes to tell "exactly
// limit" from "larger".
package boundedread

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// ErrNotRegular is matched (errors.Is) by the error for a path that is a FIFO, a device, a
// directory, a socket or anything else that is not a regular file.
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is matched (errors.Is) by the error for input larger than the limit.
var ErrTooLarge = errors.New("too large")

// notRegularError says what the path is instead of a regular file.
type notRegularError struct{ kind string }

func (e notRegularError) Error() string        { return "is " + e.kind + ", not a regular file" }
func (e notRegularError) Is(target error) bool { return target == ErrNotRegular }

// tooLargeError says what the limit is.
type tooLargeError struct{ limit int64 }

func (e tooLargeError) Error() string {
	return "larger than " + Size(e.limit) + "; refusing to read it"
}
func (e tooLargeError) Is(target error) bool { return target == ErrTooLarge }

// ReadFile returns the content of the regular file at path (symlinks followed), which must hold at
// most limit bytes. It never blocks on a FIFO or a device put at the path, and never reads more
// than limit+1 bytes. Every error is an *fs.PathError naming path; its Err says what went wrong,
// e.g. "is a named pipe (FIFO), not a regular file" (errors.Is ErrNotRegular) or "larger than
// 1 MiB; refusing to read it" (errors.Is ErrTooLarge). errors.Is(err, fs.ErrNotExist) and the
// like work as for os.Open.
func ReadFile(path string, limit int64) ([]byte, error) {
	// O_NOCTTY: a terminal device at the path must not become the process's controlling terminal
	// by being opened (it is refused right after, but the open alone would do it).
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		// Opening a Unix socket fails with ENXIO ("no such device or address"), which does not
		// tell an operator what is wrong; say what the path is instead.
		if errors.Is(err, syscall.ENXIO) {
			if st, serr := os.Stat(path); serr == nil && st.Mode()&fs.ModeSocket != 0 {
				return nil, &fs.PathError{Op: "open", Path: path, Err: notRegularError{kind: "a socket"}}
			}
		}
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "open", Path: path, Err: notRegularError{kind: Kind(st.Mode())}}
	}
	if st.Size() > limit {
		return nil, &fs.PathError{Op: "read", Path: path, Err: tooLargeError{limit: limit}}
	}
	// The size seen by fstat is not trusted for the read: the file may grow meanwhile, and some
	// regular files (procfs, sysfs) report size 0 whatever they hold.
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err // *fs.PathError from os.File.Read
	}
	if int64(len(data)) > limit {
		return nil, &fs.PathError{Op: "read", Path: path, Err: tooLargeError{limit: limit}}
	}
	return data, nil
}

// ReadAll reads r to its end, at most limit bytes, and gives up when ctx ends. It is meant for
// standard input, where a terminal or a pipe whose writer never closes would otherwise block the
// process beyond the reach of SIGINT/SIGTERM: the read runs in its own goroutine, which is left
// behind when ctx ends first (reads from an *os.File such as stdin cannot be interrupted); the
// caller is expected to exit soon after. The error for input larger than limit matches
// ErrTooLarge; the error for an ended ctx is context.Cause(ctx).
func ReadAll(ctx context.Context, r io.Reader, limit int64) ([]byte, error) {
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1) // buffered: a reader left behind must not block for ever on send
	go func() {
		data, err := io.ReadAll(io.LimitReader(r, limit+1))
		done <- result{data, err}
	}()
	select {
	case res := <-done:
		if res.err != nil {
			return nil, res.err
		}
		if int64(len(res.data)) > limit {
			return nil, tooLargeError{limit: limit}
		}
		return res.data, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// Kind describes a file mode for an error message: "a named pipe (FIFO)", "a directory", ….
func Kind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	}
	return fmt.Sprintf("of type %s", m.Type())
}

// Size renders a byte count the way limits are written in documentation: "1 MiB", "16 KiB", "100
// bytes".
func Size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
