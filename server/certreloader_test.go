package server

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/boundedread"
)

// tlsFixture runs a CertReloader and a TLS listener on 127.0.0.1 serving through it.
type tlsFixture struct {
	t        *testing.T
	ca       *testCA
	reloader *CertReloader
	url      string
	client   *http.Client
	// attempts receives the error of every reload attempt Run makes.
	attempts chan error
}

func startTLSFixture(t *testing.T, dir certDir, ca *testCA, configure func(*CertReloader)) *tlsFixture {
	t.Helper()
	certFile, keyFile := dir.paths()
	r, err := NewCertReloader(certFile, keyFile, testLogger(t))
	if err != nil {
		t.Fatalf("NewCertReloader: %v", err)
	}
	f := &tlsFixture{t: t, ca: ca, reloader: r, attempts: make(chan error, 100)}
	r.afterReload = func(_ bool, err error) {
		select {
		case f.attempts <- err:
		default:
		}
	}
	r.recheck = time.Hour // only the file watch can trigger a reload, unless configure says otherwise
	if configure != nil {
		configure(r)
	}

	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- r.Run(ctx) }()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveDone := make(chan error, 1)
	handler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello") })
	go func() { serveDone <- ServeListener(ctx, l, handler, r.TLSConfig(), testLogger(t)) }()
	t.Cleanup(func() {
		cancel()
		for name, done := range map[string]chan error{"Run": runDone, "Serve": serveDone} {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s returned %v after cancel, want nil", name, err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("%s did not return after cancel", name)
			}
		}
	})

	f.url = "https://" + l.Addr().String() + "/"
	f.client = &http.Client{
		Timeout: 30 * time.Second, // generous: a loaded CI machine running -race is slow, not broken
		Transport: &http.Transport{
			// Only the test CA is trusted; every request is a new handshake so it sees the
			// certificate in service at that moment.
			TLSClientConfig:   &tls.Config{RootCAs: ca.pool},
			DisableKeepAlives: true,
		},
	}
	return f
}

// servedSerial makes a request and returns the serial of the certificate the server presented.
func (f *tlsFixture) servedSerial() int64 {
	f.t.Helper()
	res, err := f.client.Get(f.url)
	if err != nil {
		f.t.Fatalf("GET over TLS: %v", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if string(body) != "hello" {
		f.t.Fatalf("body %q", body)
	}
	return res.TLS.PeerCertificates[0].SerialNumber.Int64()
}

func (f *tlsFixture) waitForSerial(want int64) {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := f.servedSerial()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("still serving serial %d, want %d", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (f *tlsFixture) drainAttempts() {
	for {
		select {
		case <-f.attempts:
		default:
			return
		}
	}
}

// waitForFailedAttempt waits until Run tried to load a pair and failed.
func (f *tlsFixture) waitForFailedAttempt() {
	f.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case err := <-f.attempts:
			if err != nil {
				return
			}
		case <-timeout:
			f.t.Fatal("no failed reload attempt seen")
		}
	}
}

func TestCertReloaderFollowsRotation(t *testing.T) {
	for name, newDir := range map[string]func(string) certDir{
		"rename":                   func(d string) certDir { return renameDir{d} },
		"Kubernetes Secret volume": func(d string) certDir { return secretVolumeDir{dir: d, n: new(int)} },
	} {
		t.Run(name, func(t *testing.T) {
			ca := newTestCA(t)
			dir := newDir(t.TempDir())
			dir.write(t, ca.issue(t, 1))
			f := startTLSFixture(t, dir, ca, nil)
			if got := f.servedSerial(); got != 1 {
				t.Fatalf("serving serial %d, want 1", got)
			}

			dir.write(t, ca.issue(t, 2))
			f.waitForSerial(2)

			// A corrupt replacement is refused and the working certificate stays.
			f.drainAttempts()
			dir.write(t, pemPair{
				cert: []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"),
				key:  ca.issue(t, 3).key,
			})
			f.waitForFailedAttempt()
			if got := f.servedSerial(); got != 2 {
				t.Fatalf("after a corrupt replacement: serving serial %d, want 2", got)
			}

			// So is a certificate whose key does not match.
			f.drainAttempts()
			dir.write(t, pemPair{cert: ca.issue(t, 4).cert, key: ca.issue(t, 5).key})
			f.waitForFailedAttempt()
			if got := f.servedSerial(); got != 2 {
				t.Fatalf("after a mismatched replacement: serving serial %d, want 2", got)
			}

			// And the next good pair is picked up.
			dir.write(t, ca.issue(t, 6))
			f.waitForSerial(6)
		})
	}
}

// TestCertReloaderPeriodic covers the safety net alone: no file watch at all.
func TestCertReloaderPeriodic(t *testing.T) {
	ca := newTestCA(t)
	dir := renameDir{t.TempDir()}
	dir.write(t, ca.issue(t, 1))
	f := startTLSFixture(t, dir, ca, func(r *CertReloader) {
		r.watch = false
		r.recheck = 50 * time.Millisecond
	})
	dir.write(t, ca.issue(t, 2))
	f.waitForSerial(2)
}

func TestCertReloaderTLSVersion(t *testing.T) {
	ca := newTestCA(t)
	dir := renameDir{t.TempDir()}
	dir.write(t, ca.issue(t, 1))
	f := startTLSFixture(t, dir, ca, nil)
	old := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.pool, MaxVersion: tls.VersionTLS11},
	}}
	if res, err := old.Get(f.url); err == nil {
		res.Body.Close()
		t.Error("a TLS 1.1 client was served")
	}
	h2 := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.pool}, ForceAttemptHTTP2: true,
	}}
	res, err := h2.Get(f.url)
	if err != nil {
		t.Fatalf("HTTP/2 client: %v", err)
	}
	res.Body.Close()
	if res.ProtoMajor != 2 || res.TLS.Version != tls.VersionTLS13 {
		t.Errorf("negotiated %s over TLS version %x, want HTTP/2 over TLS 1.3", res.Proto, res.TLS.Version)
	}
	if (*CertReloader)(nil).TLSConfig() != nil {
		t.Error("nil reloader: TLSConfig is not nil")
	}
}

func TestNewCertReloaderRefusesUnusablePair(t *testing.T) {
	ca := newTestCA(t)
	p1, p2 := ca.issue(t, 1), ca.issue(t, 2)
	for name, files := range map[string]pemPair{
		"mismatched key": {cert: p1.cert, key: p2.key},
		"corrupt cert":   {cert: []byte("garbage"), key: p1.key},
		"empty key":      {cert: p1.cert},
	} {
		dir := renameDir{t.TempDir()}
		dir.write(t, files)
		certFile, keyFile := dir.paths()
		if _, err := NewCertReloader(certFile, keyFile, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	dir := renameDir{t.TempDir()}
	certFile, keyFile := dir.paths()
	if _, err := NewCertReloader(certFile, keyFile, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing files: error %v, want one wrapping os.ErrNotExist", err)
	}
	// A named pipe at the certificate path is refused at once: opening it for a plain read would
	// block the reloader until a writer appears.
	if err := syscall.Mkfifo(certFile, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := NewCertReloader(certFile, keyFile, nil); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, boundedread.ErrNotRegular) {
			t.Errorf("FIFO at the certificate path: error %v, want one for a file that is not regular", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("NewCertReloader blocked on a FIFO at the certificate path")
	}
}

// noisyDir keeps writing an unrelated file in dir (as a log file next to the certificate would)
// every 20 ms, well inside the settle time, until the test ends.
func noisyDir(t *testing.T, dir string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f, err := os.Create(filepath.Join(dir, "noise.log"))
		if err != nil {
			return
		}
		defer f.Close()
		for ctx.Err() == nil {
			_, _ = f.WriteString("a line of log\n")
			time.Sleep(20 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// TestCertReloaderInNoisyDirectory: events that never stop (a log file in the certificate's
// directory) must not postpone the reload for ever.
func TestCertReloaderInNoisyDirectory(t *testing.T) {
	ca := newTestCA(t)
	d := t.TempDir()
	dir := renameDir{d}
	dir.write(t, ca.issue(t, 1))
	f := startTLSFixture(t, dir, ca, nil)
	noisyDir(t, d)
	time.Sleep(200 * time.Millisecond)
	dir.write(t, ca.issue(t, 2))
	f.waitForSerial(2)
}
