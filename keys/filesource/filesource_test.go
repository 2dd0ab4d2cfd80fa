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
	"sync"
	"syscall"
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

func encodePair(t testing.TB, k crypto.Signer) pair {
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
	s := New(path, testLogger(t), eventsOnly())
	s.emptyGrace = 300 * time.Millisecond // the empty file below is meant to stay empty
	w := start(t, s)
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
	write(t, big, make([]byte, keys.MaxFileSize+1))
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

// collected runs a Source under a real keys.Collector, the way serve does, and records every set
// the collector publishes.
type collected struct {
	t    *testing.T
	c    *keys.Collector
	sets chan keys.Set
}

func startCollected(t *testing.T, s *Source) *collected {
	t.Helper()
	cl := &collected{t: t, sets: make(chan keys.Set, 100)}
	c, err := keys.NewCollector(testLogger(t), func(set keys.Set) { cl.sets <- set }, s)
	if err != nil {
		t.Fatal(err)
	}
	cl.c = c
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitFor):
			t.Error("the collector (and so the source) did not stop after cancel")
		}
	})
	return cl
}

// expectSet waits for the next published set and checks its kids.
func (cl *collected) expectSet(kids ...string) {
	cl.t.Helper()
	select {
	case set := <-cl.sets:
		if got := set.KeyIDs(); strings.Join(got, ",") != strings.Join(kids, ",") {
			cl.t.Fatalf("published kids %v, want %v", got, kids)
		}
	case <-time.After(waitFor):
		cl.t.Fatalf("no set published; want kids %v; source status %+v", kids, cl.c.Status())
	}
}

// waitUnhealthy waits until the source's status is unhealthy with an error containing every want.
func (cl *collected) waitUnhealthy(want ...string) keys.SourceStatus {
	cl.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		st := cl.c.Status()[0]
		if !st.Healthy && st.LastError != "" {
			for _, w := range want {
				if !strings.Contains(st.LastError, w) {
					cl.t.Fatalf("error %q does not contain %q", st.LastError, w)
				}
			}
			return st
		}
		if time.Now().After(deadline) {
			cl.t.Fatalf("source still healthy after %s: %+v", waitFor, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSpecialFileMovedOverKey reproduces issue 13's freeze: a FIFO moved over sa.pub blocked the
// source in open(2) for ever, so the valid key moved over it next was never published and /readyz
// stayed healthy. Whatever is moved over the key file — a FIFO, a device, a file too large — the
// source must now report an error (unhealthy, last good keys still published, never an empty set)
// and publish the next valid key promptly.
func TestSpecialFileMovedOverKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		make func(t *testing.T, path string) // creates the thing at path
		want string
	}{
		{"FIFO", func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "is a named pipe (FIFO), not a regular file"},
		{"symlink to /dev/zero", func(t *testing.T, path string) {
			if err := os.Symlink("/dev/zero", path); err != nil {
				t.Fatal(err)
			}
		}, "is a character device, not a regular file"},
		{"file larger than 1 MiB", func(t *testing.T, path string) {
			write(t, path, make([]byte, keys.MaxFileSize+1))
		}, "larger than 1 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b := newPair(t), newPair(t)
			dir := t.TempDir()
			path := filepath.Join(dir, "sa.pub")
			write(t, path, a.pub)
			cl := startCollected(t, New(path, testLogger(t), eventsOnly()))
			cl.expectSet(a.kid)

			tmp := filepath.Join(dir, "incoming")
			tc.make(t, tmp)
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
			st := cl.waitUnhealthy(path, tc.want)
			if !st.Ready || st.Keys != 1 {
				t.Errorf("status %+v: the last good key must stay published", st)
			}
			select {
			case set := <-cl.sets:
				t.Fatalf("a set was published while the file was unusable: %v", set.KeyIDs())
			default:
			}

			write(t, tmp, b.pub)
			moved := time.Now()
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
			cl.expectSet(b.kid)
			if took := time.Since(moved); took > 2*time.Second {
				t.Errorf("the new key took %s to be published, want about the settle time (%s)", took, defaultSettle)
			} else {
				t.Logf("new key published %s after the move", took.Round(time.Millisecond))
			}
			if st := cl.c.Status()[0]; !st.Healthy {
				t.Errorf("status after the new key %+v", st)
			}
		})
	}
}

// TestOverwriteInPlace: overwriting the key file in place (`kubectl get secret ... > sa.pub`)
// truncates it, and the writer may take a second or more to write; the empty file in between is
// not reported (it was: a false "empty" warning on every such update). An empty file that stays
// empty is reported, once emptyGrace has passed.
func TestOverwriteInPlace(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		grace      time.Duration
		writeAfter time.Duration // how long the file stays empty; 0: for ever
	}{
		{"writer starts after a second", defaultEmptyGrace, time.Second},
		{"writer starts at once", defaultEmptyGrace, time.Millisecond},
		{"nothing is ever written", 500 * time.Millisecond, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b := newPair(t), newPair(t)
			path := filepath.Join(t.TempDir(), "sa.pub")
			write(t, path, a.pub)
			s := New(path, testLogger(t), eventsOnly())
			s.emptyGrace = tc.grace
			w := start(t, s)
			w.expectKeys(map[string]keys.Phase{a.kid: keys.PhasePublished})

			f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			truncated := time.Now()
			if tc.writeAfter == 0 {
				w.expectError(path, "empty")
				if took := time.Since(truncated); took < tc.grace {
					t.Errorf("the empty file was reported after %s, before the grace of %s", took, tc.grace)
				}
				return
			}
			time.Sleep(tc.writeAfter)
			if _, err := f.Write(b.pub); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			w.expectKeys(map[string]keys.Phase{b.kid: keys.PhasePublished}) // and no error before it
		})
	}
}

// TestHungRead: a read that never returns (a regular file on a hung network file system) must not
// stall the source: it is reported as an error after readTimeout, no second read piles up behind
// it, Run still returns on cancel, and once the file system answers again the file is read afresh.
func TestHungRead(t *testing.T) {
	t.Parallel()
	a, b := newPair(t), newPair(t)
	path := filepath.Join(t.TempDir(), "sa.pub")
	write(t, path, a.pub)

	var mu sync.Mutex
	hang := make(chan struct{})
	hanging := false
	reads, hung := 0, 0
	s := New(path, testLogger(t), WithInterval(50*time.Millisecond))
	s.readTimeout = 200 * time.Millisecond
	s.readFile = func(p string) ([]byte, error) {
		mu.Lock()
		reads++
		h := hanging
		if h {
			hung++
		}
		mu.Unlock()
		if h {
			<-hang
		}
		return keys.ReadFile(p)
	}
	w := start(t, s)
	w.expectKeys(map[string]keys.Phase{a.kid: keys.PhasePublished})

	mu.Lock()
	hanging = true
	mu.Unlock()
	w.expectError(path, "no answer within 200ms")
	time.Sleep(500 * time.Millisecond) // ten more periodic checks
	mu.Lock()
	if hung != 1 {
		t.Errorf("%d reads started while the first one hung, want 1", hung)
	}
	hanging = false
	mu.Unlock()

	write(t, path, b.pub)
	close(hang) // the file system answers again
	w.expectKeys(map[string]keys.Phase{b.kid: keys.PhasePublished})
}

// FuzzParse: whatever the file holds, parse does not panic, and what it accepts are valid keys,
// each once, active exactly when the file holds its private key.
func FuzzParse(f *testing.F) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	p := encodePair(f, k)
	for _, seed := range [][]byte{p.pub, p.priv, append(append([]byte{}, p.priv...), p.pub...), nil, []byte("garbage")} {
		f.Add(seed)
	}
	s := New("fuzz", nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := s.parse(data)
		if err != nil {
			if got != nil {
				t.Fatal("keys returned with an error")
			}
			return
		}
		if len(got) == 0 {
			t.Fatal("no error and no keys")
		}
		// The kids whose private key the file holds, found block by block on their own.
		private := map[string]bool{}
		for rest := data; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			if strings.HasSuffix(b.Type, "PRIVATE KEY") {
				if ks, err := keys.ParsePEM("block", pem.EncodeToMemory(b)); err == nil && len(ks) == 1 {
					private[ks[0].KeyID()] = true
				}
			}
		}
		seen := map[string]bool{}
		for _, k := range got {
			kid := k.Public.KeyID()
			if k.Public.IsZero() || seen[kid] {
				t.Fatalf("zero or duplicate key %s", k.Public)
			}
			seen[kid] = true
			if want := map[bool]keys.Phase{true: keys.PhaseActive, false: keys.PhasePublished}[private[kid]]; k.Phase != want {
				t.Fatalf("key %s has phase %q, want %q", k.Public, k.Phase, want)
			}
		}
	})
}
