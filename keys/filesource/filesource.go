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
// reported as broken. An empty file must stay empty for 5 s before it is reported: overwriting a
// file in place (`kubectl get secret ... > sa.pub`, `cp`) truncates it first and writes the new
// content only once the writer has it, which can take a second or more.
//
// Reading never stalls the source. The file is opened without blocking and must be a regular file
// of at most keys.MaxFileSize bytes (keys.ReadFile), so a FIFO, a device or a huge file put at the
// path is an error observation like any other, and the last good keys stay published. A read that
// still hangs (a regular file on a network or FUSE file system that stopped answering) is given up
// after 10 s and reported as an error; it is not started again while it is still hanging.
package filesource

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

const (
	// DefaultInterval is how often the file is re-read even without a file-system event.
	DefaultInterval = time.Minute
	// defaultSettle is how long a burst of events must be quiet before the file is re-read, so
	// that a file being written is not read half-way.
	defaultSettle = 100 * time.Millisecond
	// defaultEmptyGrace is how long an empty file must stay empty before it is reported. A file
	// overwritten in place is empty from the truncation until the writer writes, and a writer
	// such as `kubectl get secret ... | base64 -d > sa.pub` first waits for the API server (and
	// perhaps an exec credential plugin), which takes a second or two. Waiting costs nothing: the
	// last good keys stay published meanwhile, only the error is reported later.
	defaultEmptyGrace = 5 * time.Second
	// defaultReadTimeout is how long a read may take before the source gives up on it and
	// reports an error. A local key file reads in microseconds; only a hung file system takes
	// this long.
	defaultReadTimeout = 10 * time.Second
)

// Source is a keys.Source that reads one key file.
type Source struct {
	path        string
	logger      *slog.Logger
	interval    time.Duration
	settle      time.Duration
	emptyGrace  time.Duration
	readTimeout time.Duration
	notify      bool                         // use fsnotify; tests turn it off to exercise the periodic re-read alone
	readFile    func(string) ([]byte, error) // keys.ReadFile; tests stand in a read that hangs
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
	s := &Source{path: path, interval: DefaultInterval, settle: defaultSettle, emptyGrace: defaultEmptyGrace,
		readTimeout: defaultReadTimeout, notify: true, readFile: keys.ReadFile}
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
	settling := s.check(ctx, &st, report)
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
			if s.check(ctx, &st, report) {
				arm()
			}
		case <-ticker.C:
			// Adding a watched directory again is a no-op; this re-establishes the watch when the
			// directory was missing or has been replaced.
			addWatch()
			if s.check(ctx, &st, report) {
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
	// pendingSince is when pending was first seen; an empty file is reported only once it has
	// been pending for emptyGrace.
	pendingSince time.Time
	// hanging is a read that had not returned when the source gave up waiting for it. No new
	// read is started while it hangs: each would hang as well and pile up goroutines.
	hanging <-chan readResult
}

type readResult struct {
	data []byte
	err  error
}

// check reads the file and reports if its content or error changed. An error is only reported
// once two reads, settle apart, agree on it, so that a file caught half-way through a
// non-atomic write is not reported as broken, and an empty file only once it has stayed empty
// for emptyGrace; check returns true when it needs another read, settle later, to decide.
func (s *Source) check(ctx context.Context, st *state, report func(keys.Observation)) (confirm bool) {
	data, err := s.read(ctx, st)
	if ctx.Err() != nil {
		return false // shutting down: a read cut short is no observation
	}
	var o keys.Observation
	var sig string
	empty := false
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
			empty = len(bytes.TrimSpace(data)) == 0
		}
	}
	if sig == st.sig {
		st.pending = ""
		return false
	}
	if o.Err != nil {
		now := time.Now()
		if sig != st.pending {
			st.pending, st.pendingSince = sig, now
			s.logger.Debug("key file unusable; reading it again before reporting", "error", o.Err)
			return true
		}
		if empty && now.Sub(st.pendingSince) < s.emptyGrace {
			// Most likely overwritten in place and the writer has not written yet.
			return true
		}
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

// read reads the file in a goroutine of its own and waits for it at most readTimeout, so that a
// hung file system cannot stall Run: it keeps answering ctx and reports the hang as an error.
func (s *Source) read(ctx context.Context, st *state) ([]byte, error) {
	res := st.hanging
	if res != nil {
		select {
		case <-res:
			// The hung read came back, with content of when it started; read afresh.
			res, st.hanging = nil, nil
		default:
		}
	}
	if res == nil {
		ch := make(chan readResult, 1) // buffered: a read given up on must not block on send
		go func() {
			data, err := s.readFile(s.path)
			ch <- readResult{data, err}
		}()
		res = ch
	}
	t := time.NewTimer(s.readTimeout)
	defer t.Stop()
	select {
	case r := <-res:
		st.hanging = nil
		return r.data, r.err // keys.ReadFile's errors name the path
	case <-t.C:
		st.hanging = res
		return nil, fmt.Errorf("reading key file %s: no answer within %s; the file system may be hung", s.path, s.readTimeout)
	case <-ctx.Done():
		st.hanging = res
		return nil, ctx.Err()
	}
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
