package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/boundedread"
)

const (
	// defaultCertRecheck is the safety net behind the file watch: a watch is lost when its
	// directory is replaced, and inotify instances are a per-user limit that busy nodes exhaust.
	defaultCertRecheck = time.Minute
	// certChangeSettle lets a burst of events (a writer replacing both files one after the other)
	// end before the pair is read, so a half-written rotation is not reported as an error.
	certChangeSettle = 100 * time.Millisecond
)

// CertReloader serves a certificate and key from files and follows their changes without a
// restart: a Kubernetes Secret volume (which swaps a ..data symlink), cert-manager, or a plain
// rename. A new pair that cannot be used (unreadable, corrupt, key not matching the certificate)
// is logged and the previous one stays in service.
type CertReloader struct {
	certFile, keyFile string
	logger            *slog.Logger
	recheck           time.Duration
	// watch is false only in tests of the periodic path.
	watch bool
	// afterReload, when set (by tests), is called after every reload attempt made by Run.
	afterReload func(changed bool, err error)

	current atomic.Pointer[loadedCert]
}

type loadedCert struct {
	cert *tls.Certificate
	// sum identifies the file contents, so that a re-read of unchanged files is neither parsed
	// nor logged.
	sum [sha256.Size]byte
}

// NewCertReloader loads the pair once; it fails if that pair is not usable, since there is no
// previous certificate to fall back on. Call Run to follow changes.
func NewCertReloader(certFile, keyFile string, logger *slog.Logger) (*CertReloader, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &CertReloader{
		certFile: certFile,
		keyFile:  keyFile,
		logger:   logger,
		recheck:  defaultCertRecheck,
		watch:    true,
	}
	if _, err := r.reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// TLSConfig returns a server configuration (TLS 1.2 or newer) that presents the current
// certificate at every handshake. It returns nil on a nil receiver, so an optional reloader can be
// passed straight to Serve.
func (r *CertReloader) TLSConfig() *tls.Config {
	if r == nil {
		return nil
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.GetCertificate,
	}
}

// GetCertificate is the tls.Config callback; it returns the pair loaded last.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.current.Load().cert, nil
}

// Run follows the files until ctx is done, and returns nil then. It watches the files' parent
// directories rather than the files: Secret volumes replace the files by swapping a symlink in the
// directory, which a watch on the old file never sees. Without a usable watch it re-reads
// periodically only.
func (r *CertReloader) Run(ctx context.Context) error {
	var (
		events  <-chan fsnotify.Event
		errs    <-chan error
		watcher *fsnotify.Watcher
	)
	dirs := r.dirs()
	if r.watch {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			r.logger.Warn("cannot watch the TLS certificate files; re-reading them periodically only",
				"error", err, "interval", r.recheck)
		} else {
			defer w.Close()
			watcher, events, errs = w, w.Events, w.Errors
			r.addWatches(watcher, dirs)
		}
	}
	ticker := time.NewTicker(r.recheck)
	defer ticker.Stop()
	// The settle timer is armed by the first event of a burst and not pushed out by later ones:
	// a directory that never goes quiet (a log file written next to the certificate) must not
	// postpone the reload for ever. It still gathers a Secret volume's several renames into one.
	settle := time.NewTimer(certChangeSettle)
	settle.Stop()
	defer settle.Stop()
	settling := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			// Any event in the directories may be the swap; a needless re-read costs two small
			// file reads and a hash.
			if !settling {
				settle.Reset(certChangeSettle)
				settling = true
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			r.logger.Warn("watching the TLS certificate files", "error", err)
		case <-settle.C:
			settling = false
			r.reloadAndLog("the files changed")
		case <-ticker.C:
			if watcher != nil {
				r.addWatches(watcher, dirs)
			}
			r.reloadAndLog("periodic re-read")
		}
	}
}

func (r *CertReloader) dirs() []string {
	dirs := []string{filepath.Dir(r.certFile)}
	if d := filepath.Dir(r.keyFile); d != dirs[0] {
		dirs = append(dirs, d)
	}
	return dirs
}

// addWatches (re-)adds the directory watches that are missing, such as after the directory was
// deleted and created again.
func (r *CertReloader) addWatches(w *fsnotify.Watcher, dirs []string) {
	have := w.WatchList()
	for _, d := range dirs {
		if slices.Contains(have, d) {
			continue
		}
		if err := w.Add(d); err != nil {
			r.logger.Warn("cannot watch a TLS certificate directory; relying on the periodic re-read",
				"dir", d, "error", err, "interval", r.recheck)
		}
	}
}

func (r *CertReloader) reloadAndLog(why string) {
	changed, err := r.reload()
	if err != nil {
		cur := r.current.Load().cert.Leaf
		r.logger.Error("cannot load the new TLS certificate; still serving the previous one",
			"trigger", why, "error", err, "servingSerial", cur.SerialNumber.Text(16), "servingNotAfter", cur.NotAfter)
	}
	if r.afterReload != nil {
		r.afterReload(changed, err)
	}
}

// maxPEMFile bounds a certificate chain or key file; real ones are a few kilobytes.
const maxPEMFile = 1 << 20

// reload reads and parses the pair and, if it is new and usable, puts it in service.
func (r *CertReloader) reload() (changed bool, err error) {
	// A FIFO or device put at either path must not freeze the reloader.
	certPEM, err := boundedread.ReadFile(r.certFile, maxPEMFile)
	if err != nil {
		return false, fmt.Errorf("reading TLS certificate: %w", err)
	}
	keyPEM, err := boundedread.ReadFile(r.keyFile, maxPEMFile)
	if err != nil {
		return false, fmt.Errorf("reading TLS key: %w", err)
	}
	sum := sha256.Sum256(bytes.Join([][]byte{certPEM, keyPEM}, []byte{0}))
	if cur := r.current.Load(); cur != nil && cur.sum == sum {
		return false, nil
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("loading TLS key pair from %s and %s: %w", r.certFile, r.keyFile, err)
	}
	if pair.Leaf == nil {
		return false, errors.New("loading TLS key pair: no leaf certificate")
	}
	leaf := pair.Leaf
	r.current.Store(&loadedCert{cert: &pair, sum: sum})
	level := slog.LevelInfo
	if time.Now().After(leaf.NotAfter) {
		// Served anyway: the files are what the operator deployed, and refusing them would hide
		// the rotation rather than fix it.
		level = slog.LevelWarn
	}
	r.logger.Log(context.Background(), level, "loaded TLS certificate",
		"cert", r.certFile, "subject", leaf.Subject.String(), "dnsNames", leaf.DNSNames,
		"serial", leaf.SerialNumber.Text(16), "notBefore", leaf.NotBefore, "notAfter", leaf.NotAfter,
		"chainLength", len(pair.Certificate))
	return true, nil
}
