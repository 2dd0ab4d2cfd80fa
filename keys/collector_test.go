package keys_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

const waitLimit = 10 * time.Second

// fakeSource is an in-memory keys.Source driven by the test: every step is either an observation to
// report or an error for Run to return. step blocks until the observation has been handed to the
// collector, so the test can look at the state right after.
type fakeSource struct {
	name    string
	steps   chan fakeStep
	stopped chan struct{} // closed when Run returns
	runs    atomic.Int32
}

type fakeStep struct {
	obs  keys.Observation
	fail error
	done chan struct{}
}

func newFakeSource(name string) *fakeSource {
	return &fakeSource{name: name, steps: make(chan fakeStep), stopped: make(chan struct{})}
}

func (f *fakeSource) Name() string { return f.name }

func (f *fakeSource) Run(ctx context.Context, report func(keys.Observation)) error {
	f.runs.Add(1)
	defer close(f.stopped)
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-f.steps:
			if s.fail != nil {
				close(s.done)
				return s.fail
			}
			report(s.obs)
			close(s.done)
		}
	}
}

func (f *fakeSource) send(t *testing.T, s fakeStep) {
	t.Helper()
	s.done = make(chan struct{})
	select {
	case f.steps <- s:
	case <-time.After(waitLimit):
		t.Fatalf("source %s: Run is not receiving", f.name)
	}
	<-s.done
}

func (f *fakeSource) good(t *testing.T, ks ...keys.Key) {
	t.Helper()
	f.send(t, fakeStep{obs: keys.Observation{Keys: ks}})
}

func (f *fakeSource) bad(t *testing.T, err error) {
	t.Helper()
	f.send(t, fakeStep{obs: keys.Observation{Err: err}})
}

// recorder records the sets handed to onChange and checks they are never delivered concurrently.
type recorder struct {
	mu       sync.Mutex
	sets     []keys.Set
	inFlight atomic.Int32
	overlap  atomic.Bool
}

func (r *recorder) onChange(s keys.Set) {
	if r.inFlight.Add(1) > 1 {
		r.overlap.Store(true)
	}
	defer r.inFlight.Add(-1)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sets = append(r.sets, s)
}

func (r *recorder) all() []keys.Set {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sets)
}

func (r *recorder) count() int { return len(r.all()) }

func (r *recorder) last(t *testing.T) keys.Set {
	t.Helper()
	s := r.all()
	if len(s) == 0 {
		t.Fatal("onChange was never called")
	}
	return s[len(s)-1]
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// startCollector runs a collector over sources until the test ends; the returned channel yields
// Run's result.
func startCollector(t *testing.T, ctx context.Context, rec *recorder, sources ...keys.Source) (*keys.Collector, <-chan error) {
	t.Helper()
	c, err := keys.NewCollector(discardLogger(), rec.onChange, sources...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		errc <- c.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-stopped:
		case <-time.After(waitLimit):
			t.Error("collector did not stop")
		}
	})
	return c, errc
}

func waitErr(t *testing.T, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(waitLimit):
		t.Fatal("Run did not return")
		return nil
	}
}

func statusOf(t *testing.T, c *keys.Collector, name string) keys.SourceStatus {
	t.Helper()
	for _, s := range c.Status() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no status for %s", name)
	return keys.SourceStatus{}
}

func TestCollectorWaitsForEverySourceThenMerges(t *testing.T) {
	k := ecKeys(t, 3)
	a, b := newFakeSource("secret/kube-system/a"), newFakeSource("file//b.pub")
	rec := &recorder{}
	c, _ := startCollector(t, t.Context(), rec, a, b)

	for _, st := range c.Status() {
		if st.Ready || st.Healthy || st.Keys != 0 || st.Errors != 0 || !st.LastGood.IsZero() {
			t.Errorf("initial status %+v", st)
		}
	}
	if names := []string{c.Status()[0].Name, c.Status()[1].Name}; !slices.Equal(names, []string{a.name, b.name}) {
		t.Errorf("Status order %v, want configuration order", names)
	}

	a.good(t, active(k[0]), published(k[1]))
	if n := rec.count(); n != 0 {
		t.Fatalf("onChange called %d times before every source reported", n)
	}
	if st := statusOf(t, c, a.name); !st.Ready || !st.Healthy || st.Keys != 2 || st.LastGood.IsZero() {
		t.Errorf("status of a: %+v", st)
	}
	if st := statusOf(t, c, b.name); st.Ready {
		t.Errorf("status of b: %+v", st)
	}

	// b reports k1 as active and k2: the union, with k1 active.
	b.good(t, active(k[1]), published(k[2]))
	if n := rec.count(); n != 1 {
		t.Fatalf("onChange called %d times, want 1", n)
	}
	want := keys.NewSet(active(k[0]), active(k[1]), published(k[2]))
	if got := rec.last(t); !got.Equal(want) {
		t.Errorf("set %v, want %v", setContents(got), setContents(want))
	}
}

func TestCollectorKeepsLastGoodKeysOfFailingSource(t *testing.T) {
	k := ecKeys(t, 4)
	a, b := newFakeSource("a"), newFakeSource("b")
	rec := &recorder{}
	c, _ := startCollector(t, t.Context(), rec, a, b)
	a.good(t, active(k[0]))
	b.good(t, published(k[1]))
	first := rec.last(t)

	boom := errors.New(`secret kube-system/a key tls.crt: PEM block 1 (PUBLIC KEY): RSA key has 1024 bits`)
	a.bad(t, boom)
	a.bad(t, boom)
	if n := rec.count(); n != 1 {
		t.Fatalf("onChange called %d times after a failure, want still 1", n)
	}
	st := statusOf(t, c, "a")
	if !st.Ready || st.Healthy || st.LastError != boom.Error() || st.Errors != 2 || st.Keys != 1 || st.LastFailed.IsZero() || st.LastGood.IsZero() {
		t.Errorf("status after failure: %+v", st)
	}

	// b changes: the new set still has a's last good key.
	b.good(t, published(k[1]), published(k[2]))
	want := keys.NewSet(active(k[0]), published(k[1]), published(k[2]))
	if got := rec.last(t); rec.count() != 2 || !got.Equal(want) {
		t.Fatalf("after b changed: %d sets, last %v, want %v", rec.count(), setContents(got), setContents(want))
	}
	if !first.Equal(keys.NewSet(active(k[0]), published(k[1]))) {
		t.Error("a delivered set changed afterwards")
	}

	// a recovers with the same keys: healthy again, no new set, the error count stays.
	a.good(t, active(k[0]))
	if n := rec.count(); n != 2 {
		t.Errorf("onChange called on recovery with identical keys (%d sets)", n)
	}
	if st := statusOf(t, c, "a"); !st.Healthy || st.Errors != 2 || st.Keys != 1 {
		t.Errorf("status after recovery: %+v", st)
	}

	// a reports a new key: the old one is gone.
	a.good(t, active(k[3]))
	want = keys.NewSet(active(k[3]), published(k[1]), published(k[2]))
	if got := rec.last(t); !got.Equal(want) {
		t.Errorf("after a rotated: %v, want %v", setContents(got), setContents(want))
	}
}

func TestCollectorSourceThatNeverSucceeded(t *testing.T) {
	k := ecKeys(t, 2)
	a, b := newFakeSource("a"), newFakeSource("b")
	rec := &recorder{}
	c, _ := startCollector(t, t.Context(), rec, a, b)
	a.good(t, active(k[0]))
	b.bad(t, errors.New("secret kube-system/b not found"))
	b.good(t)                                                      // empty observation
	b.send(t, fakeStep{obs: keys.Observation{Keys: []keys.Key{}}}) // empty, non-nil
	if n := rec.count(); n != 0 {
		t.Fatalf("onChange called %d times although b never delivered keys", n)
	}
	st := statusOf(t, c, "b")
	if st.Ready || st.Healthy || st.Errors != 3 || st.Keys != 0 || !st.LastGood.IsZero() || st.LastFailed.IsZero() {
		t.Errorf("status of b: %+v", st)
	}
	if !strings.Contains(st.LastError, "no key") {
		t.Errorf("an empty observation is reported as %q", st.LastError)
	}
	b.good(t, published(k[1]))
	if got := rec.last(t); rec.count() != 1 || !got.Equal(keys.NewSet(active(k[0]), published(k[1]))) {
		t.Errorf("got %d sets, last %v", rec.count(), setContents(got))
	}
}

func TestCollectorEmptyObservationAfterSuccessIsAnError(t *testing.T) {
	k := ecKeys(t, 1)
	a := newFakeSource("a")
	rec := &recorder{}
	c, _ := startCollector(t, t.Context(), rec, a)
	a.good(t, active(k[0]))
	a.good(t) // e.g. the Secret was emptied
	if n := rec.count(); n != 1 {
		t.Fatalf("onChange called %d times, want 1: an empty source must not empty the set", n)
	}
	if st := statusOf(t, c, "a"); !st.Ready || st.Healthy || st.Errors != 1 || st.Keys != 1 || !strings.Contains(st.LastError, "no key") {
		t.Errorf("status: %+v", st)
	}
	if got := rec.last(t); !got.Equal(keys.NewSet(active(k[0]))) {
		t.Errorf("set %v", setContents(got))
	}
}

// TestCollectorAllowEmpty: a source that says an empty observation is expected (the lifecycle
// state between rotations) is ready with no keys, and emptying it removes its keys from the set.
func TestCollectorAllowEmpty(t *testing.T) {
	k := ecKeys(t, 2)
	secret, state := newFakeSource("secret"), newFakeSource("state")
	rec := &recorder{}
	c, _ := startCollector(t, t.Context(), rec, secret, state)
	secret.good(t, active(k[0]))
	state.send(t, fakeStep{obs: keys.Observation{AllowEmpty: true}})
	if got := rec.last(t); rec.count() != 1 || !got.Equal(keys.NewSet(active(k[0]))) {
		t.Fatalf("got %d sets, last %v", rec.count(), setContents(got))
	}
	if st := statusOf(t, c, "state"); !st.Ready || !st.Healthy || st.Keys != 0 || st.Errors != 0 {
		t.Errorf("status of the empty source: %+v", st)
	}
	state.send(t, fakeStep{obs: keys.Observation{Keys: []keys.Key{{Public: k[1], Phase: keys.PhaseStaged}}, AllowEmpty: true}})
	if got := rec.last(t); !got.Equal(keys.NewSet(active(k[0]), keys.Key{Public: k[1], Phase: keys.PhaseStaged})) {
		t.Fatalf("after staging: %v", setContents(got))
	}
	state.send(t, fakeStep{obs: keys.Observation{AllowEmpty: true}})
	if got := rec.last(t); rec.count() != 3 || !got.Equal(keys.NewSet(active(k[0]))) {
		t.Fatalf("after withdrawing: %d sets, last %v", rec.count(), setContents(got))
	}
	// Without AllowEmpty the same observation is still a failure.
	secret.good(t)
	if st := statusOf(t, c, "secret"); st.Healthy || st.Errors != 1 {
		t.Errorf("status of the emptied secret: %+v", st)
	}
}

func TestCollectorIdenticalReportsDoNotNotify(t *testing.T) {
	k := ecKeys(t, 2)
	a, b := newFakeSource("a"), newFakeSource("b")
	rec := &recorder{}
	startCollector(t, t.Context(), rec, a, b)
	a.good(t, active(k[0]), published(k[1]))
	b.good(t, published(k[1]))
	a.good(t, active(k[0]), published(k[1]))
	a.good(t, published(k[1]), active(k[0]))                     // other order
	a.good(t, active(k[0]))                                      // k1 still comes from b
	b.good(t, published(k[1]), published(k[1]), published(k[0])) // k0 still active through a
	if n := rec.count(); n != 1 {
		t.Fatalf("onChange called %d times for an unchanged set", n)
	}
	// A phase change is a change.
	a.good(t, published(k[0]))
	if n := rec.count(); n != 2 {
		t.Fatalf("onChange called %d times, want 2 after a phase change", n)
	}
	if got := rec.last(t); !got.Equal(keys.NewSet(published(k[0]), published(k[1]))) {
		t.Errorf("set %v", setContents(got))
	}
}

// TestCollectorCopiesObservation: a source may reuse its slice after reporting it.
func TestCollectorCopiesObservation(t *testing.T) {
	k := ecKeys(t, 3)
	a, b := newFakeSource("a"), newFakeSource("b")
	rec := &recorder{}
	startCollector(t, t.Context(), rec, a, b)
	buf := []keys.Key{active(k[0])}
	a.send(t, fakeStep{obs: keys.Observation{Keys: buf}})
	buf[0] = active(k[2]) // the source scribbles over its buffer
	b.good(t, published(k[1]))
	want := keys.NewSet(active(k[0]), published(k[1]))
	if got := rec.last(t); !got.Equal(want) {
		t.Errorf("set %v, want %v", setContents(got), setContents(want))
	}
}

func TestCollectorSourceRunErrorStopsCollector(t *testing.T) {
	k := ecKeys(t, 1)
	a, b := newFakeSource("secret/kube-system/a"), newFakeSource("b")
	rec := &recorder{}
	_, errc := startCollector(t, t.Context(), rec, a, b)
	b.good(t, active(k[0]))
	forbidden := errors.New("secrets is forbidden")
	a.send(t, fakeStep{fail: forbidden})
	err := waitErr(t, errc)
	if !errors.Is(err, forbidden) {
		t.Fatalf("Run returned %v, want it to wrap %v", err, forbidden)
	}
	if !strings.Contains(err.Error(), "secret/kube-system/a") {
		t.Errorf("error %q does not name the source", err)
	}
	select {
	case <-b.stopped:
	default:
		t.Error("the other source was still running when Run returned")
	}
}

func TestCollectorStopsOnContextEnd(t *testing.T) {
	cases := map[string]func(context.Context) (context.Context, func()){
		"cancel": func(ctx context.Context) (context.Context, func()) {
			return context.WithCancel(ctx)
		},
		"cancel with cause": func(ctx context.Context) (context.Context, func()) {
			ctx, cancel := context.WithCancelCause(ctx)
			return ctx, func() { cancel(errors.New("shutting down")) }
		},
		"deadline": func(ctx context.Context) (context.Context, func()) {
			ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			return ctx, func() { <-ctx.Done(); cancel() }
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			a, b := newFakeSource("a"), newFakeSource("b")
			rec := &recorder{}
			ctx, stop := mk(t.Context())
			_, errc := startCollector(t, ctx, rec, a, b)
			if name != "deadline" { // the deadline may pass before a source is ready to receive
				a.good(t, active(ecKeys(t, 1)[0]))
			}
			stop()
			if err := waitErr(t, errc); err != nil {
				t.Errorf("Run returned %v after its context ended, want nil", err)
			}
			for _, s := range []*fakeSource{a, b} {
				select {
				case <-s.stopped:
				default:
					t.Errorf("source %s still running after Run returned", s.name)
				}
			}
		})
	}
}

func TestNewCollectorRejectsBadConfig(t *testing.T) {
	if _, err := keys.NewCollector(discardLogger(), func(keys.Set) {}); err == nil {
		t.Error("NewCollector without sources succeeded")
	}
	_, err := keys.NewCollector(discardLogger(), func(keys.Set) {}, newFakeSource("x"), newFakeSource("y"), newFakeSource("x"))
	if err == nil || !strings.Contains(err.Error(), "x") {
		t.Errorf("duplicate source names: %v", err)
	}
}

// TestCollectorConcurrentSources: many sources report concurrently; onChange is serialised, every
// source runs once, and the final set is the union of every source's last report.
func TestCollectorConcurrentSources(t *testing.T) {
	const nSources, nReports = 8, 25
	pool := ecKeys(t, 6)
	var sources []keys.Source
	var fakes []*fakeSource
	for i := range nSources {
		f := newFakeSource(fmt.Sprintf("src-%d", i))
		fakes = append(fakes, f)
		sources = append(sources, f)
	}
	rec := &recorder{}
	c, _ := startCollector(t, t.Context(), rec, sources...)
	var wg sync.WaitGroup
	final := make([][]keys.Key, nSources)
	for i, f := range fakes {
		wg.Go(func() {
			for r := range nReports {
				if r%5 == 4 {
					f.bad(t, errors.New("flaky"))
					continue
				}
				ks := []keys.Key{published(pool[(i+r)%len(pool)]), active(pool[(i*r)%len(pool)])}
				f.good(t, ks...)
				final[i] = ks
			}
		})
	}
	wg.Wait()
	if rec.overlap.Load() {
		t.Error("onChange ran concurrently with itself")
	}
	var all []keys.Key
	for _, ks := range final {
		all = append(all, ks...)
	}
	if got, want := rec.last(t), keys.NewSet(all...); !got.Equal(want) {
		t.Errorf("final set %v, want %v", setContents(got), setContents(want))
	}
	for i, st := range c.Status() {
		if !st.Ready || st.Errors != nReports/5 || st.Name != fakes[i].name {
			t.Errorf("status %+v", st)
		}
		if n := fakes[i].runs.Load(); n != 1 {
			t.Errorf("source %d ran %d times", i, n)
		}
	}
	// Consecutive delivered sets always differ.
	sets := rec.all()
	for i := 1; i < len(sets); i++ {
		if sets[i].Equal(sets[i-1]) {
			t.Errorf("sets %d and %d are equal", i-1, i)
		}
	}
}

// logRecords captures a logger's records for assertions.
type logRecords struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }

// matching returns the records at level whose message contains msg, each as "attr=value ...".
func (l *logRecords) matching(level slog.Level, msg string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.records {
		if r.Level != level || !strings.Contains(r.Message, msg) {
			continue
		}
		var attrs []string
		r.Attrs(func(a slog.Attr) bool {
			attrs = append(attrs, a.Key+"="+a.Value.String())
			return true
		})
		out = append(out, strings.Join(attrs, " "))
	}
	return out
}

func startLoggingCollector(t *testing.T, logs *logRecords, rec *recorder, sources ...keys.Source) *keys.Collector {
	t.Helper()
	c, err := keys.NewCollector(slog.New(logs), rec.onChange, sources...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

// TestCollectorLogsRecovery: a source that failed and then delivers good keys again says so at
// info ("key source recovered", with what it recovered from); before, the log ended on the
// failure and nobody could tell from it whether the source was still broken.
func TestCollectorLogsRecovery(t *testing.T) {
	k := ecKeys(t, 2)
	boom := errors.New("reading key file /pki/sa.pub: is a named pipe (FIFO), not a regular file")
	type step struct {
		good bool // else a failure with boom
		keys []keys.Key
	}
	for _, tc := range []struct {
		name  string
		steps []step
		want  int // "key source recovered" lines
	}{
		{"good only", []step{{good: true, keys: []keys.Key{active(k[0])}}, {good: true, keys: []keys.Key{active(k[1])}}}, 0},
		{"fails, recovers", []step{{good: true, keys: []keys.Key{active(k[0])}}, {}, {}, {good: true, keys: []keys.Key{active(k[1])}}}, 1},
		{"recovers with the same keys", []step{{good: true, keys: []keys.Key{active(k[0])}}, {}, {good: true, keys: []keys.Key{active(k[0])}}}, 1},
		{"never good, then good", []step{{}, {good: true, keys: []keys.Key{active(k[0])}}}, 1},
		{"fails, recovers, fails, recovers", []step{{good: true, keys: []keys.Key{active(k[0])}}, {}, {good: true, keys: []keys.Key{active(k[0])}}, {}, {good: true, keys: []keys.Key{active(k[1])}}}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logRecords{}
			src := newFakeSource("file//pki/sa.pub")
			startLoggingCollector(t, logs, &recorder{}, src)
			for _, s := range tc.steps {
				if s.good {
					src.good(t, s.keys...)
				} else {
					src.bad(t, boom)
				}
			}
			got := logs.matching(slog.LevelInfo, "key source recovered")
			if len(got) != tc.want {
				t.Fatalf("%d recovery lines %q, want %d", len(got), got, tc.want)
			}
			for _, line := range got {
				for _, want := range []string{"source=file//pki/sa.pub", "lastError=" + boom.Error(), "failingFor="} {
					if !strings.Contains(line, want) {
						t.Errorf("recovery line %q lacks %q", line, want)
					}
				}
			}
		})
	}
}

// TestCollectorWarnsAboveAWSKeyLimit: AWS STS accepts at most 100 keys in a JWKS. A larger set is
// still published (dropping keys would break every relying party for them) but warned about, once
// per key-set change, not per observation.
func TestCollectorWarnsAboveAWSKeyLimit(t *testing.T) {
	k := ecKeys(t, keys.AWSMaxJWKSKeys+2)
	asKeys := func(n int) []keys.Key {
		out := make([]keys.Key, n)
		for i := range n {
			out[i] = published(k[i])
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		counts []int // successive observations, by number of keys
		warns  int
	}{
		{"at the limit", []int{keys.AWSMaxJWKSKeys}, 0},
		{"above the limit", []int{keys.AWSMaxJWKSKeys + 1}, 1},
		{"the same set again", []int{keys.AWSMaxJWKSKeys + 1, keys.AWSMaxJWKSKeys + 1}, 1},
		{"each change above the limit", []int{keys.AWSMaxJWKSKeys + 1, keys.AWSMaxJWKSKeys + 2}, 2},
		{"back under the limit", []int{keys.AWSMaxJWKSKeys + 1, 3}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logRecords{}
			rec := &recorder{}
			src := newFakeSource("secret/ns/big")
			startLoggingCollector(t, logs, rec, src)
			for _, n := range tc.counts {
				src.good(t, asKeys(n)...)
			}
			if got := rec.last(t).Len(); got != tc.counts[len(tc.counts)-1] {
				t.Errorf("published %d keys, want all %d: the limit must not drop keys", got, tc.counts[len(tc.counts)-1])
			}
			got := logs.matching(slog.LevelWarn, "more keys than AWS STS accepts")
			if len(got) != tc.warns {
				t.Fatalf("%d warnings %q, want %d", len(got), got, tc.warns)
			}
			for _, line := range got {
				if !strings.Contains(line, "awsLimit=100") {
					t.Errorf("warning %q lacks the limit", line)
				}
			}
		})
	}
}
