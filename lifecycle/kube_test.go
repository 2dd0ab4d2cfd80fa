package lifecycle

import (
	"context"
	"crypto/elliptic"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/signingprobe"
)

// The tests in this file run against a real kube-apiserver (internal/testcluster): compare-and-swap
// is the API server's, not a fake's.

var shared struct {
	once    sync.Once
	cluster *testcluster.Cluster
	dir     string
	err     error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.cluster != nil {
		if err := shared.cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the test cluster:", err)
			code = 1
		}
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// kube returns a Secrets client of the shared cluster and a fresh namespace for the test.
func kube(t *testing.T) (corev1client.CoreV1Interface, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a real kube-apiserver (run without -short)")
	}
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		bin, err := testcluster.BinDir(ctx, os.Stderr)
		if err != nil {
			shared.err = err
			return
		}
		if shared.dir, err = os.MkdirTemp("", "koi-lifecycle-"); err != nil {
			shared.err = err
			return
		}
		signing, _, err := pki.GenerateECDSAKeyPEM(elliptic.P256())
		if err != nil {
			shared.err = err
			return
		}
		shared.cluster, shared.err = testcluster.Start(ctx, testcluster.Config{
			BinDir: bin, WorkDir: filepath.Join(shared.dir, "cluster"),
			ServiceAccountIssuers: []string{"https://issuer.example"}, SigningKeyPEM: signing,
		})
	})
	if shared.err != nil {
		t.Fatalf("test cluster: %v", shared.err)
	}
	c, err := corev1client.NewForConfig(shared.cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	ns := fmt.Sprintf("lc-%d", time.Now().UnixNano())
	if _, err := c.Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return c, ns
}

// clock is a settable time source.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock    { c := &clock{}; c.ns.Store(t.UnixNano()); return c }
func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }

// fixture is a Cluster API style signing-key Secret holding k1, and a Manager over it.
type fixture struct {
	t       *testing.T
	secrets corev1client.SecretsGetter
	ns      string
	clock   *clock
	m       *Manager
	k1      Record
}

const (
	signingName = "workload-sa"
	stateName   = "workload-oidc-lifecycle"
	testLead    = 10 * time.Minute
)

func newFixture(t *testing.T) *fixture {
	t.Helper()
	c, ns := kube(t)
	k1, err := NewStagedRecord(AlgorithmES256, t0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Secrets(ns).Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: signingName},
		Type:       "cluster.x-k8s.io/secret",
		Data:       map[string][]byte{"tls.crt": k1.Public.PEM(), "tls.key": k1.private},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, secrets: c, ns: ns, clock: newClock(t0), k1: k1}
	f.m = f.manager()
	return f
}

func (f *fixture) manager() *Manager {
	f.t.Helper()
	m, err := NewManager(Config{
		Secrets:          f.secrets,
		StateSecret:      Ref{Namespace: f.ns, Name: stateName},
		SigningSecret:    Ref{Namespace: f.ns, Name: signingName},
		MaxTokenLifetime: 24 * time.Hour, ClockSkew: 5 * time.Minute, MaxAge: time.Hour,
		PublishLead: testLead,
		Logger:      slog.New(slog.NewTextHandler(testWriter{f.t}, nil)),
		Now:         f.clock.now,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return m
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func (f *fixture) state() *State {
	f.t.Helper()
	st, err := f.m.store.Read(f.t.Context())
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

func (f *fixture) signing() *corev1.Secret {
	f.t.Helper()
	s, err := f.secrets.Secrets(f.ns).Get(f.t.Context(), signingName, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func (f *fixture) reconcile() {
	f.t.Helper()
	if _, err := f.m.Reconcile(f.t.Context()); err != nil {
		f.t.Fatal(err)
	}
}

func phaseOf(s *State, kid string) keys.Phase {
	r, ok := s.Lookup(kid)
	if !ok {
		return "gone"
	}
	return r.Phase
}

// TestStoreConcurrentUpdatesLoseNothing: many writers on two stores over the same Secret, each
// adding its own record, all retried through real 409 Conflicts: every record is there at the end.
func TestStoreConcurrentUpdatesLoseNothing(t *testing.T) {
	c, ns := kube(t)
	stores := []*Store{NewStore(c, ns, stateName), NewStore(c, ns, stateName)}
	const writers = 24
	recs := make([]Record, writers)
	for i := range recs {
		r, err := NewStagedRecord(AlgorithmES256, t0)
		if err != nil {
			t.Fatal(err)
		}
		r.Phase, r.private, r.Promoted = keys.PhaseActive, nil, t0
		recs[i] = r
	}
	var calls atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i, r := range recs {
		wg.Go(func() {
			_, err := stores[i%2].Update(t.Context(), func(s *State) error {
				calls.Add(1)
				s.Keys = append(s.Keys, r)
				return nil
			})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	st, err := stores[0].Read(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Keys) != writers {
		t.Fatalf("%d records after %d concurrent updates: updates were lost", len(st.Keys), writers)
	}
	if calls.Load() <= writers {
		t.Logf("no conflict happened (%d mutate calls); the test proves less than it could", calls.Load())
	} else {
		t.Logf("%d concurrent updates took %d attempts: %d conflicts retried", writers, calls.Load(), calls.Load()-writers)
	}
}

// TestConcurrentStageExactlyOne: concurrent stage requests through two managers: one wins, every
// other one gets ErrConflict, and the state has exactly one staged key.
func TestConcurrentStageExactlyOne(t *testing.T) {
	f := newFixture(t)
	managers := []*Manager{f.m, f.manager()}
	const n = 20
	var ok, conflict atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, err := managers[i%2].Stage(t.Context(), AlgorithmES256)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrConflict):
				conflict.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || conflict.Load() != n-1 {
		t.Fatalf("%d staged, %d conflicts; want 1 and %d", ok.Load(), conflict.Load(), n-1)
	}
	staged := 0
	for _, r := range f.state().Keys {
		if r.Phase == keys.PhaseStaged {
			staged++
		}
	}
	if staged != 1 {
		t.Fatalf("%d staged keys in the state", staged)
	}
}

// TestRotationLifecycle: stage → promote (refused before the lead, then accepted) → the signing-key
// Secret holds the new key and the bundle → the old key is previous → after retention it is pruned
// from the state and the bundle.
func TestRotationLifecycle(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	f.reconcile()
	if p := phaseOf(f.state(), f.k1.KID); p != keys.PhaseActive {
		t.Fatalf("K1 is %s after the first reconcile", p)
	}

	k2, err := f.m.Stage(ctx, AlgorithmRS256)
	if err != nil {
		t.Fatal(err)
	}
	f.clock.add(testLead - time.Second)
	if _, err := f.m.Promote(ctx, k2.KID, false); !errors.Is(err, ErrConflict) {
		t.Fatalf("promote before the publish lead: %v", err)
	}
	f.clock.add(time.Second)
	rec, err := f.m.Promote(ctx, k2.KID, false)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Phase != keys.PhaseActive || rec.HasPrivateKey() {
		t.Fatalf("promoted record %v, private key kept: %v", rec, rec.HasPrivateKey())
	}
	sec := f.signing()
	if string(sec.Data["tls.key"]) != string(k2.private) {
		t.Fatal("tls.key does not hold the promoted key")
	}
	if got, _ := bundleKIDs(sec); !slices.Equal(got, slices.Sorted(slices.Values([]string{f.k1.KID, k2.KID}))) {
		t.Fatalf("bundle %v", got)
	}
	st := f.state()
	k1rec, _ := st.Lookup(f.k1.KID)
	if k1rec.Phase != keys.PhasePrevious || !k1rec.PublishUntil.Equal(f.clock.now().Add(f.m.cfg.Retention())) {
		t.Fatalf("K1 after promote: %+v", k1rec)
	}
	if _, err := f.m.Promote(ctx, k2.KID, true); !errors.Is(err, ErrConflict) {
		t.Fatalf("second promote: %v", err)
	}
	if _, _, err := f.m.Remove(ctx, k2.KID, true); !errors.Is(err, ErrConflict) {
		t.Fatalf("removing the active key: %v", err)
	}

	// Within retention nothing is pruned.
	f.clock.add(f.m.cfg.Retention() - time.Second)
	f.reconcile()
	if p := phaseOf(f.state(), f.k1.KID); p != keys.PhasePrevious {
		t.Fatalf("K1 is %s before its publish_until", p)
	}
	f.clock.add(time.Second)
	next, err := f.m.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p := phaseOf(f.state(), f.k1.KID); p != "gone" {
		t.Fatalf("K1 is %s after its publish_until", p)
	}
	if got, _ := bundleKIDs(f.signing()); !slices.Equal(got, []string{k2.KID}) {
		t.Fatalf("bundle after prune %v", got)
	}
	if !next.Equal(f.clock.now().Add(resync)) {
		t.Errorf("next reconcile at %v, want the resync", next)
	}
}

// TestDepartureByOperator: a key that leaves the signing-key Secret without our promote (an
// operator, a Cluster API rollout) becomes previous and stays published; retiring it early needs
// force.
func TestDepartureByOperator(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	f.reconcile()
	k3, _ := NewStagedRecord(AlgorithmES256, t0)
	sec := f.signing()
	sec.Data = map[string][]byte{"tls.crt": k3.Public.PEM(), "tls.key": k3.private}
	if _, err := f.secrets.Secrets(f.ns).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.clock.add(time.Minute)
	f.reconcile()
	st := f.state()
	if phaseOf(st, f.k1.KID) != keys.PhasePrevious || phaseOf(st, k3.KID) != keys.PhaseActive {
		t.Fatalf("after the operator's swap: %v", st.Keys)
	}
	// The state still publishes K1 (the Secret no longer does).
	if !slices.ContainsFunc(st.Published(), func(k keys.Key) bool { return k.Public.KeyID() == f.k1.KID }) {
		t.Fatal("K1 is not published by the state")
	}
	if _, _, err := f.m.Remove(ctx, f.k1.KID, false); !errors.Is(err, ErrConflict) {
		t.Fatalf("retire inside retention without force: %v", err)
	}
	if _, how, err := f.m.Remove(ctx, f.k1.KID, true); err != nil || how != Retired {
		t.Fatalf("forced retire: %v %v", how, err)
	}
	if p := phaseOf(f.state(), f.k1.KID); p != "gone" {
		t.Fatalf("K1 is %s after a forced retire", p)
	}
}

// TestPromoteRetriesSigningSecretConflicts: the signing-key Secret is being written by someone else
// in a tight loop (a controller touching its annotations); promote still lands, through the
// compare-and-swap retries, and keeps the other writer's changes.
func TestPromoteRetriesSigningSecretConflicts(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	f.reconcile()
	k2, err := f.m.Stage(ctx, AlgorithmES256)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var writes atomic.Int32
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, _, err := updateSecret(ctx, f.secrets.Secrets(f.ns), signingName, func(s *corev1.Secret) (bool, error) {
				if s.Annotations == nil {
					s.Annotations = map[string]string{}
				}
				s.Annotations["example.com/touched"] = fmt.Sprint(i)
				return true, nil
			})
			if err == nil {
				writes.Add(1)
			}
		}
	})
	time.Sleep(50 * time.Millisecond)
	_, err = f.m.Promote(ctx, k2.KID, true)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	sec := f.signing()
	if string(sec.Data["tls.key"]) != string(k2.private) || sec.Annotations["example.com/touched"] == "" {
		t.Fatalf("promote lost against the concurrent writer (%d writes)", writes.Load())
	}
	t.Logf("promote landed among %d concurrent writes of the signing-key Secret", writes.Load())
}

// TestCorruptStateIsNeverOverwritten: a state document that does not parse stops every write
// (it may hold retained keys), and the source reports an error instead of an empty state.
func TestCorruptStateIsNeverOverwritten(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	_, err := f.secrets.Secrets(f.ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: stateName},
		Data:       map[string][]byte{DataKey: []byte(`{"version":1,"keys":[{"kid":"x"`)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Stage(ctx, AlgorithmES256); err == nil || errors.Is(err, ErrConflict) {
		t.Fatalf("stage over a corrupt state: %v", err)
	}
	if _, err := f.m.Reconcile(ctx); err == nil {
		t.Fatal("reconcile over a corrupt state succeeded")
	}
	sec, err := f.secrets.Secrets(f.ns).Get(ctx, stateName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(sec.Data[DataKey]) != `{"version":1,"keys":[{"kid":"x"` {
		t.Fatal("the corrupt state was overwritten")
	}
	obs := firstObservations(t, f.m.Source(), 1)
	if obs[0].Err == nil {
		t.Fatalf("the source reported %v for a corrupt state", obs[0])
	}
}

// TestSourceFollowsState: the state's source reports nothing (but a good observation) for a missing
// state, then the staged key as staged, then the previous key after a promote.
func TestSourceFollowsState(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	got := make(chan keys.Observation, 16)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.m.Source().Run(sctx, func(o keys.Observation) { got <- o }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	want := func(what string, phases map[string]keys.Phase) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case o := <-got:
				if o.Err != nil || !o.AllowEmpty {
					t.Fatalf("%s: observation %+v", what, o)
				}
				have := map[string]keys.Phase{}
				for _, k := range o.Keys {
					have[k.Public.KeyID()] = k.Phase
				}
				if mapsEqual(have, phases) {
					return
				}
			case <-deadline:
				t.Fatalf("%s: no observation with %v", what, phases)
			}
		}
	}
	want("no state yet", map[string]keys.Phase{})
	f.reconcile()
	want("active record", map[string]keys.Phase{f.k1.KID: keys.PhasePrevious})
	k2, err := f.m.Stage(ctx, AlgorithmES256)
	if err != nil {
		t.Fatal(err)
	}
	want("staged", map[string]keys.Phase{f.k1.KID: keys.PhasePrevious, k2.KID: keys.PhaseStaged})
	if _, _, err := f.m.Remove(ctx, k2.KID, false); err != nil {
		t.Fatal(err)
	}
	want("withdrawn", map[string]keys.Phase{f.k1.KID: keys.PhasePrevious})
}

func firstObservations(t *testing.T, src keys.Source, n int) []keys.Observation {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var out []keys.Observation
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = src.Run(ctx, func(o keys.Observation) {
			mu.Lock()
			defer mu.Unlock()
			out = append(out, o)
			if len(out) == n {
				cancel()
			}
		})
	}()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(out) < n {
		t.Fatalf("%d observations, want %d", len(out), n)
	}
	return out
}

// TestPromoteRefusedWithoutSigningKey: a signing-key Secret that holds public keys only, or that
// is gone, says nothing about which key signs: promote is a conflict, and nothing is written.
func TestPromoteRefusedWithoutSigningKey(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	k2, err := f.m.Stage(ctx, AlgorithmES256)
	if err != nil {
		t.Fatal(err)
	}
	sec := f.signing()
	sec.Data = map[string][]byte{"old.pub": f.k1.Public.PEM()}
	if _, err := f.secrets.Secrets(f.ns).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Promote(ctx, k2.KID, true); !errors.Is(err, ErrConflict) {
		t.Fatalf("promote into a public-keys-only Secret: %v", err)
	}
	if got := f.signing().Data; len(got) != 1 {
		t.Fatalf("the Secret was written: %v entries", len(got))
	}
	if err := f.secrets.Secrets(f.ns).Delete(ctx, signingName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Promote(ctx, k2.KID, true); !errors.Is(err, ErrConflict) {
		t.Fatalf("promote without a signing-key Secret: %v", err)
	}
	if p := phaseOf(f.state(), k2.KID); p != keys.PhaseStaged {
		t.Fatalf("K2 is %s after refused promotes", p)
	}
}

// TestSigningObservationKeepsOutgoingKey is issue 9's rule on a real kube-apiserver, with a fake
// clock: after promote the control plane keeps signing with K1 (not rolled). K1's retention runs
// from the last time a probe saw it, survives a new manager (another leader) reading the state,
// a key seen signing is never pruned even past its publish_until, the operator is told to roll
// (log and one Event per reminder period), and once the roll is observed K1 leaves after the
// retention counted from its last sighting.
func TestSigningObservationKeepsOutgoingKey(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	f.m.cfg.Events = f.secrets.(corev1client.EventsGetter)
	f.reconcile()
	observe := func(m *Manager, kids ...string) {
		t.Helper()
		if err := m.RecordSigning(ctx, signingprobe.Observation{At: f.clock.now(), KIDs: kids, ValidFor: 3 * time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	observe(f.m, f.k1.KID)
	if st := f.state(); !st.Signing.Signs(f.k1.KID) || !st.Keys[0].LastSigned.Equal(f.clock.now()) {
		t.Fatalf("first observation not persisted: %+v", st.Signing)
	}

	k2, err := f.m.Stage(ctx, AlgorithmES256)
	if err != nil {
		t.Fatal(err)
	}
	f.clock.add(testLead)
	if _, err := f.m.Promote(ctx, k2.KID, false); err != nil {
		t.Fatal(err)
	}
	promoted := f.clock.now()
	retention := f.m.cfg.Retention()

	// The control plane is not rolled: probes keep seeing K1 every minute for longer than the
	// retention. K1's publish_until follows the last sighting; it is never pruned.
	for elapsed := time.Duration(0); elapsed <= retention+time.Hour; elapsed += 30 * time.Minute {
		f.clock.add(30 * time.Minute)
		observe(f.m, f.k1.KID)
		f.reconcile()
	}
	st := f.state()
	k1, ok := st.Lookup(f.k1.KID)
	if !ok || k1.Phase != keys.PhasePrevious {
		t.Fatalf("K1 after %s of signing without a roll: %v", f.clock.now().Sub(promoted), phaseOf(st, f.k1.KID))
	}
	if want := f.clock.now().Add(retention); !k1.PublishUntil.Equal(want) || !k1.LastSigned.Equal(f.clock.now()) {
		t.Fatalf("K1 publishUntil %v lastSigned %v, want %v and now", k1.PublishUntil, k1.LastSigned, want)
	}
	evs, err := f.secrets.(corev1client.EventsGetter).Events(f.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var rolls []corev1.Event
	for _, e := range evs.Items {
		if e.Reason == "ControlPlaneNotRolled" && e.InvolvedObject.Name == stateName && e.Type == corev1.EventTypeWarning {
			rolls = append(rolls, e)
		}
	}
	// One warning per rollReminder while K1 keeps signing past the publish lead.
	if want := int((retention + time.Hour) / rollReminder); len(rolls) < want-1 || len(rolls) > want+1 {
		t.Errorf("%d roll-the-control-plane Events over %s, want about %d", len(rolls), retention+time.Hour, want)
	}

	// A new leader (another manager over the same state, nothing in memory) observes the roll:
	// K1's retention counts from the observed switch, not from its departure from the Secret.
	other := f.manager()
	lastSeen := f.clock.now()
	f.clock.add(time.Minute)
	switched := f.clock.now()
	observe(other, k2.KID)
	if _, err := other.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	k1, _ = f.state().Lookup(f.k1.KID)
	if !k1.PublishUntil.Equal(switched.Add(retention)) || !k1.LastSigned.Equal(lastSeen) {
		t.Fatalf("after the roll K1 publishUntil %v lastSigned %v, want the observed switch %v + retention, and %v", k1.PublishUntil, k1.LastSigned, switched, lastSeen)
	}
	f.clock.add(retention - 2*time.Minute)
	if _, err := other.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if p := phaseOf(f.state(), f.k1.KID); p != keys.PhasePrevious {
		t.Fatalf("K1 pruned before retention after its last sighting: %s", p)
	}

	// Past publish_until, a key the current observation sees is still not pruned, whatever the
	// clock says (a clock that jumped, or a control plane rolled back onto K1 a moment ago).
	f.clock.add(2 * time.Minute)
	other.mu.Lock()
	other.signing = signingprobe.Observation{At: f.clock.now(), KIDs: []string{f.k1.KID}, ValidFor: time.Hour}
	other.mu.Unlock()
	if _, err := other.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if p := phaseOf(f.state(), f.k1.KID); p != keys.PhasePrevious {
		t.Fatalf("K1 seen signing was pruned past its publish_until: %s", p)
	}
	observe(other, k2.KID)
	if _, err := other.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if p := phaseOf(f.state(), f.k1.KID); p != "gone" {
		t.Fatalf("K1 is %s after retention from its last sighting", p)
	}
	if p := phaseOf(f.state(), k2.KID); p != keys.PhaseActive {
		t.Fatalf("K2 is %s", p)
	}
}
