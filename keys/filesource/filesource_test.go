package filesource

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// Generous: the race detector on a busy 2-core machine.
const waitFor = 10 * time.Second

type pair struct {
	priv, pub []byte
	kid       string
}

func newPair(t *testing.T) pair {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return encodePair(t, k)
}

func encodePair(t *testing.T, k crypto.Signer) pair {
	t.Helper()
	p8, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	kid, err := keys.KeyID(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pair{
		priv: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
		pub:  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}),
		kid:  kid,
	}
}

// watcher runs a Source and collects what it reports.
type watcher struct {
	t    *testing.T
	obs  chan keys.Observation
	stop context.CancelFunc
	done chan error
}

func start(t *testing.T, s *Source) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	w := &watcher{t: t, obs: make(chan keys.Observation, 100), stop: cancel, done: make(chan error, 1)}
	go func() { w.done <- s.Run(ctx, func(o keys.Observation) { w.obs <- o }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(waitFor):
			t.Error("Run did not return after cancel")
		}
	})
	return w
}

func (w *watcher) next() keys.Observation {
	w.t.Helper()
	select {
	case o := <-w.obs:
		return o
	case <-time.After(waitFor):
		w.t.Fatal("no observation reported")
		return keys.Observation{}
	}
}

// expectKeys waits for an observation and checks its keys (kid → phase).
func (w *watcher) expectKeys(want map[string]keys.Phase) {
	w.t.Helper()
	o := w.next()
	if o.Err != nil {
		w.t.Fatalf("observation error %v; want keys %v", o.Err, want)
	}
	got := map[string]keys.Phase{}
	for _, k := range o.Keys {
		got[k.Public.KeyID()] = k.Phase
	}
	if !maps.Equal(got, want) {
		w.t.Fatalf("keys = %v; want %v", got, want)
	}
}

func (w *watcher) expectError(contains ...string) error {
	w.t.Helper()
	o := w.next()
	if o.Err == nil {
		w.t.Fatalf("observation has %d keys; want an error containing %q", len(o.Keys), contains)
	}
	for _, c := range contains {
		if !strings.Contains(o.Err.Error(), c) {
			w.t.Errorf("error %q does not contain %q", o.Err, c)
		}
	}
	if strings.Contains(o.Err.Error(), "-----") || strings.Contains(o.Err.Error(), "BEGIN") {
		w.t.Errorf("error quotes PEM: %q", o.Err)
	}
	return o.Err
}

func (w *watcher) expectQuiet(d time.Duration) {
	w.t.Helper()
	select {
	case o := <-w.obs:
		w.t.Fatalf("unexpected observation: keys %v, error %v", o.Keys, o.Err)
	case <-time.After(d):
	}
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// eventsOnly sets an interval so long that only fsnotify events can explain a timely report.
func eventsOnly() Option { return WithInterval(time.Hour) }

func TestName(t *testing.T) {
	t.Parallel()
	if got := New("/etc/kubernetes/pki/sa.pub", nil).Name(); got != "file//etc/kubernetes/pki/sa.pub" {
		t.Errorf("Name() = %q", got)
	}
}

func TestInitialRead(t *testing.T) {
	t.Parallel()
	a, b := newPair(t), newPair(t)
	for _, tc := range []struct {
		name string
		data []byte
		want map[string]keys.Phase
	}{
		{"public key", a.pub, map[string]keys.Phase{a.kid: keys.PhasePublished}},
		{"bundle", append(append([]byte{}, a.pub...), b.pub...), map[string]keys.Phase{a.kid: keys.PhasePublished, b.kid: keys.PhasePublished}},
		{"private key", a.priv, map[string]keys.Phase{a.kid: keys.PhaseActive}},
		{"private key and other public key", append(append([]byte{}, a.priv...), b.pub...), map[string]keys.Phase{a.kid: keys.PhaseActive, b.kid: keys.PhasePublished}},
		{"private key and its own public key", append(append([]byte{}, a.pub...), a.priv...), map[string]keys.Phase{a.kid: keys.PhaseActive}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "sa.pub")
			write(t, path, tc.data)
			w := start(t, New(path, testLogger(t), eventsOnly()))
			w.expectKeys(tc.want)
		})
	}
}

func TestChangeByRewrite(t *testing.T) {
	t.Parallel()
	a, b := newPair(t), newPair(t)
	path := filepath.Join(t.TempDir(), "sa.pub")
	write(t, path, a.pub)
	w := start(t, New(path, testLogger(t), eventsOnly()))
	w.expectKeys(map[string]keys.Phase{a.kid: keys.PhasePublished})

	write(t, path, append(append([]byte{}, a.pub...), b.pub...))
	w.expectKeys(map[string]keys.Phase{a.kid: keys.PhasePublished, b.kid: keys.PhasePublished})

	// Same content again (touch): nothing to report.
	write(t, path, append(append([]byte{}, a.pub...), b.pub...))
	w.expectQuiet(500 * time.Millisecond)
}

func TestChangeByAtomicRename(t *testing.T) {
	t.Parallel()
	a, b := newPair(t), newPair(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "sa.key")
	write(t, path, a.priv)
	w := start(t, New(path, testLogger(t), eventsOnly()))
	w.expectKeys(map[string]keys.Phase{a.kid: keys.PhaseActive})

	// What editors and `install` do: write a temporary file, rename it over the original.
	tmp := filepath.Join(dir, ".sa.key.swp")
	write(t, tmp, b.priv)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	w.expectKeys(map[string]keys.Phase{b.kid: keys.PhaseActive})
}

// TestKubernetesVolumeSwap reproduces the kubelet's atomic writer: the visible file is a symlink
// through "..data", itself a symlink to a timestamped directory, and an update swaps "..data".
func TestKubernetesVolumeSwap(t *testing.T) {
	t.Parallel()
	a, b := newPair(t), newPair(t)
	dir := t.TempDir()
	writeVersion := func(name string, data []byte) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, name, "tls.crt"), data)
	}
	writeVersion("..2026_11_24_10_00_00.000000001", a.pub)
	if err := os.Symlink("..2026_11_24_10_00_00.000000001", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "tls.crt")
	if err := os.Symlink("..data/tls.crt", path); err != nil {
		t.Fatal(err)
	}
	w := start(t, New(path, testLogger(t), eventsOnly()))
	w.expectKeys(map[string]keys.Phase{a.kid: keys.PhasePublished})

	writeVersion("..2026_11_24_10_05_00.000000002", b.pub)
	if err := os.Symlink("..2026_11_24_10_05_00.000000002", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "..2026_11_24_10_00_00.000000001")); err != nil {
		t.Fatal(err)
	}
	w.expectKeys(map[string]keys.Phase{b.kid: keys.PhasePublished})
}

func TestDeleteAndRecreate(t *testing.T) {
	t.Parallel()
	a, b := newPair(t), newPair(t)
	path := filepath.Join(t.TempDir(), "sa.pub")
	write(t, path, a.pub)
	w := start(t, New(path, testLogger(t), eventsOnly()))
	w.expectKeys(map[string]keys.Phase{a.kid: keys.PhasePublished})

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	err := w.expectError(path, "no such file")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v is not fs.ErrNotExist", err)
	}

	write(t, path, b.pub)
	w.expectKeys(map[string]keys.Phase{b.kid: keys.PhasePublished})
}

func TestRecreateSameContent(t *testing.T) {
	t.Parallel()
	a := newPair(t)
	path := filepath.Join(t.TempDir(), "sa.pub")
	write(t, path, a.pub)
	w := start(t, New(path, testLogger(t), eventsOnly()))
	w.expectKeys(map[string]keys.Phase{a.kid: keys.PhasePublished})
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	w.expectError("no such file")
	// The same key coming back must be reported: the last report was the error.
	write(t, path, a.pub)
	w.expectKeys(map[string]keys.Phase{a.kid: keys.PhasePublished})
}

func TestMissingAtStart(t *testing.T) {
	t.Parallel()
	a := newPair(t)
	path := filepath.Join(t.TempDir(), "sa.pub")
	w := start(t, New(path, testLogger(t), eventsOnly()))
	w.expectError(path, "no such file")
	write(t, path, a.pub)
	w.expectKeys(map[string]keys.Phase{a.kid: keys.PhasePublished})
}

func TestDirectoryMissingAtStart(t *testing.T) {
	t.Parallel()
	a := newPair(t)
	dir := filepath.Join(t.TempDir(), "pki")
	path := filepath.Join(dir, "sa.pub")
	// The directory cannot be watched yet: the periodic re-read must pick the file up and
	// re-establish the watch.
	w := start(t, New(path, testLogger(t), WithInterval(100*time.Millisecond)))
	w.expectError(path, "no such file")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, path, a.pub)
	w.expectKeys(map[string]keys.Phase{a.kid: keys.PhasePublished})
}

func TestGarbage(t *testing.T) {
	t.Parallel()
	a := newPair(t)
	path := filepath.Join(t.TempDir(), "sa.pub")
	write(t, path, a.pub)
	w := start(t, New(path, testLogger(t), eventsOnly()))
	w.expectKeys(map[string]keys.Phase{a.kid: keys.PhasePublished})

	write(t, path, []byte("this is not a key, and it is long enough to be quoted"))
	err := w.expectError(path, "no PEM block")
	if strings.Contains(err.Error(), "not a key, and it is long") {
		t.Errorf("error quotes the file: %v", err)
	}

	// Different garbage, same error: nothing new to report.
	write(t, path, []byte("other garbage, same reason"))
	w.expectQuiet(500 * time.Millisecond)

	// A different error is reported.
	write(t, path, nil)
	w.expectError(path, "empty")

	// An unknown PEM type is not echoed.
	write(t, path, pem.EncodeToMemory(&pem.Block{Type: "MY SECRET PASSWORD IS HUNTER2", Bytes: []byte{1}}))
	err = w.expectError(path, "unsupported PEM block type")
	if strings.Contains(err.Error(), "HUNTER2") {
		t.Errorf("error echoes the PEM type: %v", err)
	}

	write(t, path, a.pub)
	w.expectKeys(map[string]keys.Phase{a.kid: keys.PhasePublished})
}

func TestUnreadable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w := start(t, New(dir, testLogger(t), eventsOnly()))
	w.expectError(dir, "is a directory")

	big := filepath.Join(t.TempDir(), "big.pub")
	write(t, big, make([]byte, maxFileSize+1))
	w2 := start(t, New(big, testLogger(t), eventsOnly()))
	w2.expectError(big, "larger than")
}

// TestPeriodicReread proves that a change is picked up without any file-system event.
func TestPeriodicReread(t *testing.T) {
	t.Parallel()
	a, b := newPair(t), newPair(t)
	path := filepath.Join(t.TempDir(), "sa.pub")
	write(t, path, a.pub)
	s := New(path, testLogger(t), WithInterval(50*time.Millisecond))
	s.notify = false
	w := start(t, s)
	w.expectKeys(map[string]keys.Phase{a.kid: keys.PhasePublished})
	w.expectQuiet(300 * time.Millisecond) // several re-reads of unchanged content report nothing

	write(t, path, b.pub)
	w.expectKeys(map[string]keys.Phase{b.kid: keys.PhasePublished})
}

func TestCancelReturns(t *testing.T) {
	t.Parallel()
	a := newPair(t)
	path := filepath.Join(t.TempDir(), "sa.pub")
	write(t, path, a.pub)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	reported := make(chan struct{}, 1)
	go func() {
		done <- New(path, nil).Run(ctx, func(keys.Observation) {
			select {
			case reported <- struct{}{}:
			default:
			}
		})
	}()
	select {
	case <-reported:
	case <-time.After(waitFor):
		t.Fatal("no observation")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v; want nil", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Run did not return within 1s of cancel")
	}
}

func TestWithInterval(t *testing.T) {
	t.Parallel()
	if s := New("x", nil, WithInterval(0)); s.interval != DefaultInterval {
		t.Errorf("WithInterval(0) set %v", s.interval)
	}
	if s := New("x", nil, WithInterval(time.Second)); s.interval != time.Second {
		t.Errorf("WithInterval(1s) set %v", s.interval)
	}
}

// TestChangeInNoisyDirectory: a directory that never goes quiet (a log file next to the key) must
// not postpone the re-read for ever.
func TestChangeInNoisyDirectory(t *testing.T) {
	t.Parallel()
	a, b := newPair(t), newPair(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "sa.pub")
	write(t, path, a.pub)
	w := start(t, New(path, testLogger(t), eventsOnly()))
	w.expectKeys(map[string]keys.Phase{a.kid: keys.PhasePublished})

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				_ = os.WriteFile(filepath.Join(dir, "noise.log"), []byte(time.Now().String()), 0o600)
			}
		}
	}()
	defer func() { close(stop); <-done }()
	write(t, path, b.pub)
	w.expectKeys(map[string]keys.Phase{b.kid: keys.PhasePublished})
}
