package mirror

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage/storagetest"
)

// fast are options that make retries and reconciles happen within a test's patience.
func fast() Options {
	return Options{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, ReconcileInterval: time.Hour, AttemptTimeout: 5 * time.Second}
}

// start runs m until the test ends and checks that Run returns promptly on cancellation.
// startWithMetrics runs a fast mirror of sink whose metrics are registered on reg.
func startWithMetrics(t *testing.T, sink storage.Sink, reg prometheus.Registerer) (*Mirror, *Metrics) {
	t.Helper()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	opts := fast()
	opts.Metrics = metrics
	m := New(sink, opts)
	start(t, m)
	return m, metrics
}

func start(t *testing.T, m *Mirror) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v on cancellation, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of cancellation")
		}
	})
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// holds reports whether mem holds exactly set's documents.
func holds(mem *storagetest.Memory, set *documents.Set) bool {
	for _, o := range storage.Objects(set) {
		got, ok := mem.Get(o.Key)
		if !ok || !bytes.Equal(got.Body, o.Body) {
			return false
		}
	}
	return true
}

// blockingSink blocks every Put until released (or its context ends).
type blockingSink struct {
	storage.Sink
	release chan struct{}
	entered chan struct{}
}

func (b *blockingSink) Put(ctx context.Context, o storage.Object) error {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	select {
	case <-b.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.Sink.Put(ctx, o)
}

// TestPublishNeverBlocksAndLatestWins: while the sink hangs, Publish returns at once for every
// set; once the sink recovers, only the newest set ends up stored, and an older set handed over
// late does not roll it back.
func TestPublishNeverBlocksAndLatestWins(t *testing.T) {
	mem := storagetest.NewMemory()
	sink := &blockingSink{Sink: mem, release: make(chan struct{}), entered: make(chan struct{}, 1)}
	m := New(sink, fast())
	start(t, m)

	sets := storagetest.NewSets(t)
	m.Publish(sets.First)
	<-sink.entered // the mirror is now stuck in Put

	begin := time.Now()
	var newest *documents.Set
	for range 50 {
		newest = sets.Render(t, sets.Second.Keys, documents.DefaultMaxAge+time.Duration(sets.Second.Generation)*time.Second)
		m.Publish(newest)
	}
	m.Publish(sets.First) // stale
	if took := time.Since(begin); took > 100*time.Millisecond {
		t.Fatalf("51 Publish calls against a hung sink took %s", took)
	}
	if st := m.Status(); st.InSync || st.Pending != newest.Generation {
		t.Fatalf("status while stuck: %+v, want not in sync, pending %d", st, newest.Generation)
	}

	close(sink.release)
	eventually(t, "the newest set is mirrored", func() bool { return holds(mem, newest) && m.Status().InSync })
	if st := m.Status(); st.Generation != newest.Generation || st.Pending != 0 {
		t.Fatalf("status %+v, want generation %d", st, newest.Generation)
	}
	// First went in (or was being written) before the burst; of the burst, only the newest.
	if puts := len(mem.Puts()); puts > 4 {
		t.Fatalf("%d objects written; intermediate sets should have been skipped", puts)
	}
}

// TestRetriesWithBackoffUntilSuccess: failures are retried, counted and reported, and cleared on
// success.
func TestRetriesWithBackoffUntilSuccess(t *testing.T) {
	mem := storagetest.NewMemory()
	var failures atomic.Int32
	failures.Store(3)
	sink := &storagetest.Faulty{Sink: mem, FailPut: func(o storage.Object) error {
		if failures.Add(-1) >= 0 {
			return errors.New("connection refused")
		}
		return nil
	}}
	reg := prometheus.NewPedanticRegistry()
	m, metrics := startWithMetrics(t, sink, reg)

	set := storagetest.NewSets(t).First
	m.Publish(set)
	eventually(t, "the documents are mirrored", func() bool { return m.Status().InSync })
	if !holds(mem, set) {
		t.Fatal("in sync but the sink does not hold the documents")
	}
	st := m.Status()
	if st.Failures != 3 || st.ConsecutiveFailures != 0 || st.LastError != "" || st.LastFailure.IsZero() || st.LastSuccess.IsZero() || st.Generation != set.Generation {
		t.Fatalf("status %+v", st)
	}
	sinkName := mem.String()
	if got := testutil.ToFloat64(metrics.failures.WithLabelValues(sinkName)); got != 3 {
		t.Fatalf("failures_total %v, want 3", got)
	}
	if got := testutil.ToFloat64(metrics.written.WithLabelValues(sinkName)); got != 2 {
		t.Fatalf("objects_written_total %v, want 2", got)
	}
	if got := testutil.ToFloat64(metrics.generation.WithLabelValues(sinkName)); got != float64(set.Generation) {
		t.Fatalf("generation %v, want %d", got, set.Generation)
	}
	if got := testutil.ToFloat64(metrics.lastSuccess.WithLabelValues(sinkName)); got < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("last_success_timestamp_seconds %v", got)
	}
	if n, err := testutil.GatherAndCount(reg, "kube_oidc_issuer_mirror_publish_duration_seconds"); err != nil || n != 2 {
		t.Fatalf("publish_duration_seconds series: %d (%v), want success and failure", n, err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(""), "kube_oidc_issuer_mirror_public_read"); err != nil {
		t.Fatalf("public_read exists for a sink without access control: %v", err)
	}
}

// TestReconcileRepairsDrift: an object deleted behind the mirror's back is restored by the next
// reconcile, without a new key set.
func TestReconcileRepairsDrift(t *testing.T) {
	mem := storagetest.NewMemory()
	opts := fast()
	opts.ReconcileInterval = 20 * time.Millisecond
	m := New(mem, opts)
	start(t, m)
	set := storagetest.NewSets(t).First
	m.Publish(set)
	eventually(t, "first publication", func() bool { return holds(mem, set) })
	h := mem.Harness()
	if err := h.Remove(context.Background(), storage.Key(documents.DiscoveryPath)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted discovery document is restored", func() bool { return holds(mem, set) })
}

// TestFailureBetweenDocumentsIsRetried: a sink that keeps failing the discovery write leaves the
// new JWKS next to the old discovery document (safe), reports not in sync, and converges once the
// writes succeed.
func TestFailureBetweenDocumentsIsRetried(t *testing.T) {
	mem := storagetest.NewMemory()
	var broken atomic.Bool
	sink := &storagetest.Faulty{Sink: mem, FailPut: func(o storage.Object) error {
		if broken.Load() && o.Key == storage.Key(documents.DiscoveryPath) {
			return errors.New("injected: discovery write failed")
		}
		return nil
	}}
	m := New(sink, fast())
	start(t, m)
	sets := storagetest.NewSets(t)
	m.Publish(sets.First)
	eventually(t, "first publication", func() bool { return m.Status().InSync })

	broken.Store(true)
	m.Publish(sets.Second)
	eventually(t, "repeated failures", func() bool { return m.Status().ConsecutiveFailures >= 3 })
	storagetest.AssertReadersSafe(t, context.Background(), mem.Harness(), sets.Second)
	if st := m.Status(); st.InSync || st.Generation != sets.First.Generation || !strings.Contains(st.LastError, "injected") {
		t.Fatalf("status while failing: %+v", st)
	}
	broken.Store(false)
	eventually(t, "convergence", func() bool { return m.Status().InSync && holds(mem, sets.Second) })
}

// fakeAccess is a sink with access control whose answers the test sets.
type fakeAccess struct {
	storage.Sink
	mu     sync.Mutex
	report storage.AccessReport
	err    error
	calls  int
}

func (f *fakeAccess) EnsurePublicRead(_ context.Context, keys []string) (storage.AccessReport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if len(keys) != 2 {
		return storage.AccessReport{}, errors.New("want both document keys")
	}
	return f.report, f.err
}

func TestAccessReport(t *testing.T) {
	for _, tc := range []struct {
		name       string
		report     storage.AccessReport
		err        error
		wantPublic float64
		wantFail   bool
	}{
		{name: "public", report: storage.AccessReport{Public: true, Managed: true}, wantPublic: 1},
		{name: "not public: reported, not a failure", report: storage.AccessReport{Problems: []string{"no statement grants s3:GetObject"}}, wantPublic: 0},
		{name: "managing the policy fails: a failure, objects still written", report: storage.AccessReport{Managed: true}, err: errors.New("AccessDenied: s3:PutBucketPolicy"), wantFail: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := storagetest.NewMemory()
			sink := &fakeAccess{Sink: mem, report: tc.report, err: tc.err}
			reg := prometheus.NewRegistry()
			m, metrics := startWithMetrics(t, sink, reg)
			set := storagetest.NewSets(t).First
			m.Publish(set)
			eventually(t, "objects written", func() bool { return holds(mem, set) })
			if tc.wantFail {
				eventually(t, "failures reported", func() bool { return m.Status().Failures >= 2 })
				st := m.Status()
				if st.InSync || !strings.Contains(st.LastError, "PutBucketPolicy") {
					t.Fatalf("status %+v", st)
				}
				return
			}
			eventually(t, "in sync", func() bool { return m.Status().InSync })
			st := m.Status()
			if st.PublicRead == nil || st.PublicRead.Public != tc.report.Public || len(st.PublicRead.Problems) != len(tc.report.Problems) {
				t.Fatalf("status %+v", st)
			}
			if got := testutil.ToFloat64(metrics.public.WithLabelValues(mem.String())); got != tc.wantPublic {
				t.Fatalf("public_read %v, want %v", got, tc.wantPublic)
			}
		})
	}
}

func TestNewMetricsRefusesDoubleRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("registering the mirror metrics twice succeeded")
	}
}

// TestRunStartsWithFullPublish: a replica that becomes leader runs Run anew; it must repair drift
// at once, not at the next reconcile tick (an hour here), even though no new set was published.
func TestRunStartsWithFullPublish(t *testing.T) {
	mem := storagetest.NewMemory()
	m := New(mem, fast()) // reconcile every hour: only the start of Run can repair
	set := storagetest.NewSets(t).First
	m.Publish(set)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	eventually(t, "first publication", func() bool { return holds(mem, set) })
	cancel() // leadership lost
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Someone deletes the discovery document while this replica does not lead.
	if err := mem.Harness().Remove(context.Background(), storage.Key(documents.DiscoveryPath)); err != nil {
		t.Fatal(err)
	}
	start(t, m) // leadership regained
	eventually(t, "the deleted discovery document is restored by the new term", func() bool { return holds(mem, set) })
}

// TestBackoff: the waits between failed attempts lie in [b/2, b) for b from MinBackoff doubling
// to MaxBackoff, and start over after a success (a fresh backoff).
func TestBackoff(t *testing.T) {
	m := New(storagetest.NewMemory(), Options{MinBackoff: 200 * time.Millisecond, MaxBackoff: time.Minute})
	b := m.backoff()
	bound := 200 * time.Millisecond
	for i := range 12 {
		d := b.Step()
		if d < bound/2 || d >= bound {
			t.Errorf("wait %d: %s, want in [%s, %s)", i, d, bound/2, bound)
		}
		bound = min(2*bound, time.Minute)
	}
}
