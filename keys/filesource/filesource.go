// Package filesource reads service-account keys from a PEM file, such as kubeadm's
// /etc/kubernetes/pki/sa.pub or sa.key on a control-plane node, or a file of a mounted Secret or
// ConfigMap volume, and watches it for changes.
//
// The file may hold several PEM blocks. A block holding a private key (RSA PRIVATE KEY, EC PRIVATE
// KEY, PRIVATE KEY) yields a keys.PhaseActive key, whose private part is dropped at once; public
// keys and certificates yield keys.PhasePublished keys. A file that cannot be read or parsed as a
// whole yields an error observation naming the path and the reason; the error never quotes the
// file's content.
//
// Changes are noticed two ways. An fsnotify watch on the file's directory (not on the file: editors
// and Kubernetes volume updates replace files by renaming, and a volume's files are symlinks
// through a "..data" symlink that is swapped atomically) triggers a re-read shortly after any event
// in that directory. A periodic re-read (every minute by default) compares a hash of the content,
// so that missed events, an unwatchable directory, or a symlink pointing elsewhere still converge.
// An observation is reported only when the content or the error changed, and an error only once two
// reads 100 ms apart agree on it, so that a file caught half-way through a non-atomic write is not
// reported as broken.
package filesource

import (
	"context"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

const (
	// DefaultInterval is how often the file is re-read even without a file-system event.
	DefaultInterval = time.Minute
	// maxFileSize bounds what is read: key files are a few KiB.
	maxFileSize = 1 << 20
	// defaultSettle is how long a burst of events must be quiet before the file is re-read, so
	// that a file being written is not read half-way.
	defaultSettle = 100 * time.Millisecond
)

// Source is a keys.Source that reads one key file.
type Source struct {
	path     string
	logger   *slog.Logger
	interval time.Duration
	settle   time.Duration
	notify   bool // use fsnotify; tests turn it off to exercise the periodic re-read alone
}

var _ keys.Source = (*Source)(nil)

// Option changes a Source.
type Option func(*Source)

// WithInterval sets how often the file is re-read regardless of file-system events. Values of
// zero or less keep DefaultInterval.
func WithInterval(d time.Duration) Option {
	return func(s *Source) {
		if d > 0 {
			s.interval = d
		}
	}
}

// New returns a source for the key file at path. A nil logger discards logs.
func New(path string, logger *slog.Logger, opts ...Option) *Source {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Source{path: path, interval: DefaultInterval, settle: defaultSettle, notify: true}
	s.logger = logger.With("source", s.Name())
	for _, o := range opts {
		o(s)
	}
	return s
}

// Name is "file/" followed by the path.
func (s *Source) Name() string { return "file/" + s.path }

// Run reads the file, reports what it holds, and then re-reads it after file-system events in its
// directory and every interval, reporting again whenever the content or the error changes. It
// returns nil once ctx is done, and an error only when path is empty. While the directory cannot
// be watched (it does not exist yet; the watch is retried every interval), or when no watcher can
// be created at all (the system is out of inotify instances), Run relies on the periodic re-read.
func (s *Source) Run(ctx context.Context, report func(keys.Observation)) error {
	if s.path == "" {
		return errors.New("key file source needs a path")
	}
	dir := filepath.Dir(s.path)
	var events <-chan fsnotify.Event
	var watchErrs <-chan error
	var w *fsnotify.Watcher
	if s.notify {
		var err error
		w, err = fsnotify.NewWatcher()
		if err != nil {
			s.logger.Warn("cannot watch the key file for changes; re-reading it periodically only", "interval", s.interval, "error", err)
		} else {
			defer w.Close()
			events, watchErrs = w.Events, w.Errors
		}
	}
	watchErr := ""
	addWatch := func() {
		if w == nil {
			return
		}
		msg := ""
		if err := w.Add(dir); err != nil {
			msg = err.Error()
		}
		if msg != watchErr {
			if msg != "" {
				s.logger.Warn("cannot watch the key file's directory; re-reading the file periodically and retrying", "dir", dir, "interval", s.interval, "error", msg)
			} else if watchErr != "" {
				s.logger.Info("watching the key file's directory again", "dir", dir)
			}
			watchErr = msg
		}
	}

	var st state
	addWatch()
	// The settle timer is armed by the first event of a burst and not pushed out by later ones,
	// so a directory that never goes quiet (a log file next to the key) cannot postpone the
	// re-read for ever.
	settle := time.NewTimer(s.settle)
	settling := s.check(&st, report)
	if !settling {
		settle.Stop()
	}
	defer settle.Stop()
	arm := func() {
		if !settling {
			settle.Reset(s.settle)
			settling = true
		}
	}

	ticker := time.NewTicker(s.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			s.logger.Debug("file-system event", "event", ev.String())
			arm()
		case err, ok := <-watchErrs:
			if !ok {
				watchErrs = nil
				continue
			}
			// fsnotify.ErrEventOverflow and the like: events were lost, so look now.
			s.logger.Warn("watching the key file's directory", "dir", dir, "error", err)
			arm()
		case <-settle.C:
			settling = false
			if s.check(&st, report) {
				arm()
			}
		case <-ticker.C:
			// Adding a watched directory again is a no-op; this re-establishes the watch when the
			// directory was missing or has been replaced.
			addWatch()
			if s.check(&st, report) {
				arm()
			}
		}
	}
}

// state is what Run last saw.
type state struct {
	hash    [sha256.Size]byte
	hasHash bool   // the last read succeeded and hash is its content's
	sig     string // what was last reported
	pending string // an error seen once, reported if the next read, settle later, sees it again
}

// check reads the file and reports if its content or error changed. An error is only reported
// once two reads, settle apart, agree on it, so that a file caught half-way through a
// non-atomic write is not reported as broken; check returns true when it needs that second read.
func (s *Source) check(st *state, report func(keys.Observation)) (confirm bool) {
	data, err := s.read()
	var o keys.Observation
	var sig string
	if err != nil {
		st.hasHash = false
		o.Err = err
		sig = "error: " + err.Error()
	} else {
		h := sha256.Sum256(data)
		if st.hasHash && h == st.hash && st.pending == "" {
			return false
		}
		st.hash, st.hasHash = h, true
		o.Keys, o.Err = s.parse(data)
		sig = fmt.Sprintf("content: %x", h)
		if o.Err != nil {
			sig = "error: " + o.Err.Error()
		}
	}
	if sig == st.sig {
		st.pending = ""
		return false
	}
	if o.Err != nil && sig != st.pending {
		st.pending = sig
		s.logger.Debug("key file unusable; reading it again before reporting", "error", o.Err)
		return true
	}
	st.pending, st.sig = "", sig
	if o.Err != nil {
		s.logger.Debug("key file yields no keys", "error", o.Err)
	} else {
		kids := make([]string, len(o.Keys))
		for i, k := range o.Keys {
			kids[i] = string(k.Phase) + ":" + k.Public.KeyID()
		}
		s.logger.Debug("key file read", "keys", kids)
	}
	report(o)
	return false
}

func (s *Source) read() ([]byte, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, fmt.Errorf("reading key file %s: %w", s.path, unwrapPath(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading key file %s: %w", s.path, unwrapPath(err))
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("reading key file %s: larger than %d bytes; not a key file", s.path, maxFileSize)
	}
	return data, nil
}

// unwrapPath drops the *fs.PathError wrapper, whose message would repeat the path.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parse returns the file's keys: those of private-key blocks active, the others published.
func (s *Source) parse(data []byte) ([]keys.Key, error) {
	pubs, err := keys.ParsePEM(s.path, data)
	if err != nil {
		return nil, fmt.Errorf("parsing key file: %w", err)
	}
	// ParsePEM returns one key per PEM block, in order, skipping EC PARAMETERS blocks.
	var private []bool
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "EC PARAMETERS" {
			private = append(private, strings.HasSuffix(b.Type, "PRIVATE KEY"))
		}
	}
	out := make([]keys.Key, len(pubs))
	for i, k := range pubs {
		out[i] = keys.Key{Public: k, Phase: keys.PhasePublished}
		if i < len(private) && private[i] {
			out[i].Phase = keys.PhaseActive
		}
	}
	// NewSet drops duplicates (a private key and its own public key: active wins) and orders the
	// keys active first.
	return append([]keys.Key(nil), keys.NewSet(out...).Keys()...), nil
}
