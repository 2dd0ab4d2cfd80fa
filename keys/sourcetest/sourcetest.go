// Package sourcetest is the conformance suite every keys.Source runs (the key file, the
// signing-key Secret, the lifecycle state Secret), so that the collector can rely on one contract
// whatever the place a source watches.
//
// The collector trusts its sources blindly: a source that reports half a key file publishes half a
// key set, one that reports a malformed place as "no keys" empties it, one that reports stale keys
// after a rotation breaks every token signed with the new key, and one that does not stop when
// asked holds up the issuer's shutdown. Each source has its own tests for its own place; this suite
// pins down what they must all agree on, in the terms of the keys.Source contract, so a new source
// (or a change to an old one) cannot quietly drift from it.
//
// A source's test calls Run with a function that returns a source over a fresh place nothing else
// uses (its own file, its own Secret), and the means to change that place from outside, the way an
// operator, kubeadm or Cluster API would.
package sourcetest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

const (
	// DefaultWait bounds each wait for an observation unless the harness sets Wait: generous for
	// -race on a busy 2-core machine and for a kube-apiserver watch, far beyond what a working
	// source needs.
	DefaultWait = 30 * time.Second
	// CancelWithin is how soon Run must return once its context is done.
	CancelWithin = 5 * time.Second
	// quoteWindow is the longest run of private key material an error may repeat: keys.ParsePEM's
	// guarantee, which every source's errors build on.
	quoteWindow = 16
)

// Key is a key pair the suite asks a harness to write.
type Key struct {
	// Signer is an *rsa.PrivateKey or an *ecdsa.PrivateKey.
	Signer crypto.Signer
	// Private asks for the private key to be written, in the form the source's place holds a
	// private key (a private-key PEM block, a Secret's tls.key, a staged lifecycle record), instead
	// of the public key alone. The suite asks for at most one private key per call: a Cluster API
	// Secret has one tls.key, a lifecycle state stages at most one key.
	Private bool
}

// KID is the key's kube-apiserver key ID.
func (k Key) KID() string {
	kid, err := keys.KeyID(k.Signer.Public())
	if err != nil {
		panic(fmt.Sprintf("sourcetest: key ID of a generated key: %v", err))
	}
	return kid
}

// PublicKey is the key as keys.NewPublicKey makes it.
func (k Key) PublicKey() keys.PublicKey {
	pk, err := keys.NewPublicKey(k.Signer.Public())
	if err != nil {
		panic(fmt.Sprintf("sourcetest: a generated key: %v", err))
	}
	return pk
}

// PublicPEM is the key's PKIX PUBLIC KEY block.
func (k Key) PublicPEM() []byte { return k.PublicKey().PEM() }

// PrivatePEM is the private key as kubeadm and Cluster API write it: an RSA PRIVATE KEY (PKCS #1)
// or EC PRIVATE KEY (SEC 1) block.
func (k Key) PrivatePEM() []byte {
	switch s := k.Signer.(type) {
	case *rsa.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(s)})
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(s)
		if err != nil {
			panic(fmt.Sprintf("sourcetest: encoding an EC key: %v", err))
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}
	panic(fmt.Sprintf("sourcetest: unsupported key type %T", k.Signer))
}

// PEM is the key as a PEM key file holds it: its private key when Private, else its public key.
func (k Key) PEM() []byte {
	if k.Private {
		return k.PrivatePEM()
	}
	return k.PublicPEM()
}

func (k Key) String() string {
	s := k.PublicKey().String()
	if k.Private {
		s += " (with its private key)"
	}
	return s
}

// PEM concatenates the PEM of ks, in order: a key file holding exactly ks.
func PEM(ks ...Key) []byte {
	var out []byte
	for _, k := range ks {
		out = append(out, k.PEM()...)
	}
	return out
}

// Corruption is a kind of malformed content a harness writes into its place.
type Corruption string

const (
	// Garbage is content that holds no key at all in the place's format: text instead of PEM, or
	// instead of a state document.
	Garbage Corruption = "garbage"
	// Truncated is the content the good keys would make, cut off in the middle of the last key,
	// which is the private key when one is written: a write that was interrupted, a copy that
	// lost its end.
	Truncated Corruption = "truncated"
	// Unsupported is the content the good keys would make plus a well-formed key no
	// service-account token can be signed with (an Ed25519 public key).
	Unsupported Corruption = "unsupported key"
)

// Corruptions is every Corruption, in the order the suite writes them.
var Corruptions = []Corruption{Garbage, Truncated, Unsupported}

// GarbageBytes is text that holds no PEM block and is no JSON document.
var GarbageBytes = []byte("this is not key material; it should have been a PEM file\n\x00\x01\x02 ~~~ \n")

// TruncatePEM cuts a PEM block (the first of data) in the middle of its base64 body and drops the
// rest, END line included.
func TruncatePEM(data []byte) []byte {
	lines := strings.SplitAfter(string(data), "\n")
	keep := max(2, len(lines)/2)
	return []byte(strings.Join(lines[:min(keep, len(lines))], ""))
}

// UnsupportedKeyPEM returns a fresh Ed25519 PUBLIC KEY block: well-formed, but no kube-apiserver
// signs service-account tokens with Ed25519, so no source may accept it.
func UnsupportedKeyPEM() []byte {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(fmt.Sprintf("sourcetest: generating an Ed25519 key: %v", err))
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(fmt.Sprintf("sourcetest: encoding an Ed25519 key: %v", err))
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// Harness is one source over a fresh place and the means to change that place from outside.
type Harness struct {
	// Source watches the place. The suite runs it at most once.
	Source keys.Source
	// SetKeys makes the place hold exactly ks (creating it or replacing what it holds), as an
	// operator or Cluster API would: the way the place is written in production (an atomic rename
	// of a file, an update of a Secret).
	SetKeys func(ctx context.Context, ks ...Key) error
	// Corrupt makes the place hold malformed content of kind c; ks are the good keys Truncated and
	// Unsupported start from (see Corruption).
	Corrupt func(ctx context.Context, c Corruption, ks ...Key) error
	// Remove deletes the place.
	Remove func(ctx context.Context) error
	// Phase is the phase the source reports a key in, given whether it was written with its private
	// key. Nil skips the check of phases.
	Phase func(private bool) keys.Phase
	// Wait bounds each wait for an observation; zero means DefaultWait.
	Wait time.Duration
	// AbsentIsEmpty says the source documents a missing place as the empty set, a good observation
	// with AllowEmpty and no keys (the lifecycle state before the first rotation), rather than as
	// an error.
	AbsentIsEmpty bool
}

// Run runs the conformance suite. newHarness is called at least once per subtest and must return a
// source over a place that does not exist yet and that no other harness uses.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Helper()
	ks := newKeys(t)
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, ks testKeys, newHarness func(*testing.T) Harness)
	}{
		{"Name", testName},
		{"InitialContent", testInitialContent},
		{"MissingAtStart", testMissingAtStart},
		{"Change", testChange},
		{"Malformed", testMalformed},
		{"NoPrivateKeyMaterial", testNoPrivateKeyMaterial},
		{"Removal", testRemoval},
		{"CancelReturns", testCancelReturns},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, ks, newHarness) })
	}
}

// testKeys are the keys every subtest draws from: generating RSA keys under -race is slow enough
// to do once.
type testKeys struct {
	rsa, ec [3]Key
}

func newKeys(t *testing.T) testKeys {
	t.Helper()
	var ks testKeys
	for i := range ks.rsa {
		r, err := rsa.GenerateKey(rand.Reader, keys.MinRSABits)
		if err != nil {
			t.Fatal(err)
		}
		e, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		ks.rsa[i], ks.ec[i] = Key{Signer: r}, Key{Signer: e}
	}
	return ks
}

func private(k Key) Key { k.Private = true; return k }

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// recorder collects what a source reports; report may be called from any goroutine.
type recorder struct {
	mu     sync.Mutex
	obs    []keys.Observation
	notify chan struct{} // a token after each report
}

func (r *recorder) report(o keys.Observation) {
	o.Keys = slices.Clone(o.Keys) // the source may reuse its slice
	r.mu.Lock()
	r.obs = append(r.obs, o)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) at(i int) (keys.Observation, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i >= len(r.obs) {
		return keys.Observation{}, false
	}
	return r.obs[i], true
}

// runner is one Run of a harness's source, and what the subtest has consumed of its reports.
type runner struct {
	t      *testing.T
	h      Harness
	ctx    context.Context // for the harness's writes
	cancel context.CancelFunc
	exited chan struct{} // closed when Run has returned; runErr is then set
	runErr error
	rec    *recorder

	next    int              // the first observation not consumed yet
	prev    keys.Observation // the last one consumed
	hasPrev bool
	private []Key // every key written with its private key: no error may quote them
}

func newRunner(t *testing.T, h Harness) *runner {
	t.Helper()
	if h.Source == nil || h.SetKeys == nil || h.Corrupt == nil || h.Remove == nil {
		t.Fatal("the harness lacks its Source, SetKeys, Corrupt or Remove")
	}
	return &runner{t: t, h: h, ctx: testContext(t), exited: make(chan struct{}), rec: &recorder{notify: make(chan struct{}, 1)}}
}

// start runs the source until the test ends (or stop).
func (r *runner) start() {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		defer close(r.exited)
		r.runErr = r.h.Source.Run(ctx, r.rec.report)
	}()
	r.t.Cleanup(func() {
		cancel()
		select {
		case <-r.exited:
		case <-time.After(DefaultWait):
			r.t.Errorf("%s: Run did not return within %s of its context ending", r.h.Source.Name(), DefaultWait)
		}
	})
}

// stop cancels Run's context and returns how long Run took to return, failing unless it returns
// nil within CancelWithin.
func (r *runner) stop() time.Duration {
	r.t.Helper()
	began := time.Now()
	r.cancel()
	select {
	case <-r.exited:
	case <-time.After(CancelWithin):
		r.t.Fatalf("Run did not return within %s of its context being canceled", CancelWithin)
	}
	took := time.Since(began)
	if r.runErr != nil {
		r.t.Fatalf("Run returned %v after its context was canceled; want nil", r.runErr)
	}
	return took
}

func (r *runner) setKeys(ks ...Key) {
	r.t.Helper()
	r.remember(ks)
	if err := r.h.SetKeys(r.ctx, ks...); err != nil {
		r.t.Fatalf("writing keys %v: %v", ks, err)
	}
}

func (r *runner) corrupt(c Corruption, ks ...Key) {
	r.t.Helper()
	r.remember(ks)
	if err := r.h.Corrupt(r.ctx, c, ks...); err != nil {
		r.t.Fatalf("writing %s content: %v", c, err)
	}
}

func (r *runner) remove() {
	r.t.Helper()
	if err := r.h.Remove(r.ctx); err != nil {
		r.t.Fatalf("removing: %v", err)
	}
}

func (r *runner) remember(ks []Key) {
	for _, k := range ks {
		if k.Private && !slices.ContainsFunc(r.private, func(p Key) bool { return p.Signer == k.Signer }) {
			r.private = append(r.private, k)
		}
	}
}

// expect waits for the next observation that differs from the one consumed last and checks it
// with match, which returns what is wrong with it ("" if nothing). Repeats of the last one
// consumed (equal keys and phases, or another error) are skipped: a source may report unchanged
// content again, but nothing else before the change it is waiting for. Every observation is
// checked for private key material on the way.
func (r *runner) expect(what string, match func(keys.Observation) string) keys.Observation {
	r.t.Helper()
	wait := r.h.Wait
	if wait <= 0 {
		wait = DefaultWait
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		for o, ok := r.rec.at(r.next); ok; o, ok = r.rec.at(r.next) {
			r.next++
			r.checkNoPrivateMaterial(o)
			if r.hasPrev && same(o, r.prev) {
				continue
			}
			if msg := match(o); msg != "" {
				r.t.Fatalf("waiting for %s: the source reported %s: %s", what, describe(o), msg)
			}
			r.prev, r.hasPrev = o, true
			return o
		}
		select {
		case <-r.rec.notify:
		case <-r.exited:
			if _, ok := r.rec.at(r.next); !ok {
				r.t.Fatalf("waiting for %s: Run returned %v before reporting it", what, r.runErr)
			}
		case <-deadline.C:
			last := "nothing"
			if r.hasPrev {
				last = describe(r.prev)
			}
			r.t.Fatalf("waiting for %s: not reported within %s (the last observation was %s)", what, wait, last)
		}
	}
}

// wantKeys matches a good observation of exactly ks, in their phases when the harness knows them.
func (r *runner) wantKeys(ks ...Key) func(keys.Observation) string {
	return func(o keys.Observation) string {
		if o.Err != nil {
			return "an error; want the keys " + fmt.Sprint(ks)
		}
		want := map[string]Key{}
		for _, k := range ks {
			want[k.KID()] = k
		}
		var problems []string
		seen := map[string]bool{}
		for _, k := range o.Keys {
			kid := k.Public.KeyID()
			w, ok := want[kid]
			switch {
			case seen[kid]:
				problems = append(problems, kid+" is reported twice")
			case !ok:
				problems = append(problems, k.Public.String()+" was not written")
			case r.h.Phase != nil && k.Phase != r.h.Phase(w.Private):
				problems = append(problems, fmt.Sprintf("%s is %s, want %s", w, k.Phase, r.h.Phase(w.Private)))
			}
			seen[kid] = true
		}
		for kid, k := range want {
			if !seen[kid] {
				problems = append(problems, k.String()+" is missing")
			}
		}
		return strings.Join(problems, "; ")
	}
}

// wantError matches an error observation.
func wantError(o keys.Observation) string {
	if o.Err == nil {
		return "keys; want an error"
	}
	return ""
}

// wantAbsent matches what the source reports for a missing place.
func (r *runner) wantAbsent(o keys.Observation) string {
	if !r.h.AbsentIsEmpty {
		if o.Err == nil {
			return "keys; want an error for a missing place (or set Harness.AbsentIsEmpty if the source documents it as the empty set)"
		}
		return ""
	}
	if o.Err != nil || len(o.Keys) != 0 || !o.AllowEmpty {
		return "want the empty set (no keys, no error, AllowEmpty) the harness declares for a missing place"
	}
	return ""
}

// same reports whether b repeats a: both errors, or the same keys in the same phases.
func same(a, b keys.Observation) bool {
	if (a.Err != nil) != (b.Err != nil) {
		return false
	}
	return a.Err != nil || (a.AllowEmpty == b.AllowEmpty && slices.Equal(signature(a), signature(b)))
}

func signature(o keys.Observation) []string {
	s := make([]string, len(o.Keys))
	for i, k := range o.Keys {
		s[i] = string(k.Phase) + ":" + k.Public.String()
	}
	slices.Sort(s)
	return s
}

func describe(o keys.Observation) string {
	if o.Err != nil {
		return fmt.Sprintf("error %q", o.Err)
	}
	if o.AllowEmpty {
		return fmt.Sprintf("keys %v (AllowEmpty)", signature(o))
	}
	return fmt.Sprintf("keys %v", signature(o))
}

// checkNoPrivateMaterial fails if o carries anything but public keys, or an error that quotes a
// private key the test wrote.
func (r *runner) checkNoPrivateMaterial(o keys.Observation) {
	r.t.Helper()
	if o.Err != nil && len(o.Keys) > 0 {
		r.t.Errorf("an error observation (%v) carries %d keys: a failed observation must not look like a partial key set", o.Err, len(o.Keys))
	}
	for _, k := range o.Keys {
		if k.Public.IsZero() {
			r.t.Errorf("reported a zero key (phase %q)", k.Phase)
			continue
		}
		switch k.Public.Public().(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey:
		default:
			r.t.Errorf("key %s holds a %T; want *rsa.PublicKey or *ecdsa.PublicKey", k.Public, k.Public.Public())
		}
		if kid, err := keys.KeyID(k.Public.Public()); err != nil || kid != k.Public.KeyID() {
			r.t.Errorf("key %s: kid is not the kube-apiserver key ID of its key (%s, %v)", k.Public, kid, err)
		}
		if b, rest := pem.Decode(k.Public.PEM()); b == nil || b.Type != "PUBLIC KEY" || len(rest) != 0 {
			r.t.Errorf("key %s does not encode as one PUBLIC KEY block", k.Public)
		}
	}
	if o.Err == nil {
		return
	}
	msg := o.Err.Error()
	if strings.Contains(msg, "-----BEGIN") || strings.Contains(msg, "-----END") {
		r.t.Errorf("the error quotes PEM armour: %q", msg)
	}
	for _, k := range r.private {
		if run := quotes(msg, k); run != "" {
			r.t.Errorf("the error quotes %q from the private key of %s: %q", run, k, msg)
		}
	}
}

// quotes returns a run of more than quoteWindow characters of k's private key, base64 as PEM has
// it (PKCS #1 or SEC 1, and PKCS #8), that msg contains, or "".
func quotes(msg string, k Key) string {
	var ders [][]byte
	if b, _ := pem.Decode(k.PrivatePEM()); b != nil {
		ders = append(ders, b.Bytes)
	}
	if p8, err := x509.MarshalPKCS8PrivateKey(k.Signer); err == nil {
		ders = append(ders, p8)
	}
	for _, der := range ders {
		enc := base64.StdEncoding.EncodeToString(der)
		for i := 0; i+quoteWindow < len(enc); i++ {
			if w := enc[i : i+quoteWindow+1]; strings.Contains(msg, w) {
				return w
			}
		}
	}
	return ""
}

// testName: the collector keys status, metrics and its lastGood map by Name, and refuses two
// sources of one name; a name that changes, or that two places share, mixes up their keys.
func testName(t *testing.T, ks testKeys, newHarness func(*testing.T) Harness) {
	h := newHarness(t)
	name := h.Source.Name()
	if strings.TrimSpace(name) == "" {
		t.Fatalf("Name() = %q; want a name that identifies the source in logs, metrics and /readyz", name)
	}
	if again := h.Source.Name(); again != name {
		t.Fatalf("Name() = %q, then %q", name, again)
	}
	// The collector refuses two sources of one name: two places must have two names.
	if other := newHarness(t).Source.Name(); other == name {
		t.Fatalf("two sources over two places are both named %q", name)
	}
	r := newRunner(t, h)
	r.setKeys(ks.ec[0])
	r.start()
	r.expect("the keys written", r.wantKeys(ks.ec[0]))
	if got := h.Source.Name(); got != name {
		t.Fatalf("Name() = %q while running, %q before", got, name)
	}
	r.stop()
	if got := h.Source.Name(); got != name {
		t.Fatalf("Name() = %q after Run returned, %q before", got, name)
	}
}

// testInitialContent: on a restart the issuer publishes nothing until every source has reported,
// so the first observation must be the content, whole, of both key types, and never an error.
func testInitialContent(t *testing.T, ks testKeys, newHarness func(*testing.T) Harness) {
	for _, tc := range []struct {
		name string
		keys []Key
	}{
		{"RSA", []Key{ks.rsa[0]}},
		{"ECDSA P-256", []Key{ks.ec[0]}},
		{"RSA and ECDSA", []Key{ks.rsa[0], ks.ec[0]}},
		{"with a private key", []Key{private(ks.rsa[0]), ks.ec[0]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRunner(t, newHarness(t))
			r.setKeys(tc.keys...)
			r.start()
			// The first observation is the content: no error while the source starts up.
			r.expect("the keys written before Run", r.wantKeys(tc.keys...))
		})
	}
}

// testMissingAtStart: the issuer may start before the key file or Secret exists (a cluster being
// created); the source reports that, and the content once it appears, without a restart.
func testMissingAtStart(t *testing.T, ks testKeys, newHarness func(*testing.T) Harness) {
	r := newRunner(t, newHarness(t))
	r.start()
	r.expect("the place reported as missing", r.wantAbsent)
	r.setKeys(ks.rsa[0], ks.ec[0])
	r.expect("the keys written after Run started", r.wantKeys(ks.rsa[0], ks.ec[0]))
}

// testChange: a rotation adds, drops and replaces keys; each new content is reported exactly (a
// stale or merged key set would keep a retired key, or miss the key that now signs).
func testChange(t *testing.T, ks testKeys, newHarness func(*testing.T) Harness) {
	r := newRunner(t, newHarness(t))
	r.setKeys(ks.rsa[0])
	r.start()
	r.expect("the initial keys", r.wantKeys(ks.rsa[0]))
	for _, step := range []struct {
		name string
		keys []Key
	}{
		{"a key added", []Key{ks.rsa[0], ks.ec[0]}},
		{"a key dropped", []Key{ks.ec[0]}},
		{"every key replaced", []Key{ks.rsa[1], ks.ec[1]}},
		{"one key replaced", []Key{ks.rsa[1], ks.ec[2]}},
		{"back to the first key", []Key{ks.rsa[0]}},
	} {
		r.setKeys(step.keys...)
		r.expect(step.name+" "+fmt.Sprint(step.keys), r.wantKeys(step.keys...))
	}
}

// testMalformed: malformed content is an error observation, so the collector keeps the last good
// keys, and never a partial set (the keys that did parse), which would replace them; recovering
// content is reported again.
func testMalformed(t *testing.T, ks testKeys, newHarness func(*testing.T) Harness) {
	good, next := []Key{ks.rsa[0]}, []Key{ks.ec[1], private(ks.rsa[1])}
	for _, c := range Corruptions {
		t.Run(string(c), func(t *testing.T) {
			r := newRunner(t, newHarness(t))
			r.setKeys(good...)
			r.start()
			r.expect("the good keys", r.wantKeys(good...))
			// Malformed content next to good keys: an error, never those keys alone (a partial
			// set) nor anything but a repeat of the last good keys before it.
			r.corrupt(c, next...)
			o := r.expect(string(c)+" content reported as an error", wantError)
			t.Logf("reported: %v", o.Err)
			r.setKeys(next...)
			r.expect("the keys written over the malformed content", r.wantKeys(next...))
		})
	}
	t.Run("at start", func(t *testing.T) {
		r := newRunner(t, newHarness(t))
		r.corrupt(Truncated, good...)
		r.start()
		r.expect("malformed content reported as an error", wantError)
		r.setKeys(good...)
		r.expect("the keys written over the malformed content", r.wantKeys(good...))
	})
}

// testNoPrivateKeyMaterial: places hold private keys (sa.key, tls.key, staged records); what a
// source reports is public keys only, the public halves of exactly those keys, and its errors never
// quote the private key.
func testNoPrivateKeyMaterial(t *testing.T, ks testKeys, newHarness func(*testing.T) Harness) {
	r := newRunner(t, newHarness(t))
	// Every observation is checked for private material on its way through expect; this subtest
	// writes private keys of both types, changes which key is private, and breaks one.
	steps := [][]Key{
		{private(ks.rsa[2]), ks.ec[2]},
		{ks.rsa[2], private(ks.ec[2])},
		{private(ks.ec[0]), ks.rsa[2]},
	}
	r.setKeys(steps[0]...)
	r.start()
	for i, step := range steps {
		if i > 0 {
			r.setKeys(step...)
		}
		o := r.expect(fmt.Sprint(step), r.wantKeys(step...))
		for _, k := range o.Keys {
			for _, w := range step {
				if w.KID() == k.Public.KeyID() && !w.PublicKey().Equal(k.Public) {
					t.Fatalf("%s: reported key is not the public key written", w)
				}
			}
		}
	}
	r.corrupt(Truncated, ks.rsa[2], private(ks.ec[1]))
	o := r.expect("a truncated private key reported as an error", wantError)
	t.Logf("reported: %v", o.Err)
}

// testRemoval: a deleted place is reported as the source documents it (an error, which keeps the
// last good keys, or the empty set), and a place recreated with the very content it had before is
// reported again.
func testRemoval(t *testing.T, ks testKeys, newHarness func(*testing.T) Harness) {
	r := newRunner(t, newHarness(t))
	written := []Key{ks.rsa[0], ks.ec[0]}
	r.setKeys(written...)
	r.start()
	r.expect("the keys written", r.wantKeys(written...))
	r.remove()
	r.expect("the removal", r.wantAbsent)
	// Recreated with the very same keys: a source that remembers content it saw before the
	// removal must still report them again.
	r.setKeys(written...)
	r.expect("the same keys written again", r.wantKeys(written...))
	r.remove()
	r.expect("the second removal", r.wantAbsent)
}

// testCancelReturns: the issuer's shutdown and leader hand-over wait for Run; it must return nil
// promptly once its context ends, whatever the place holds, even if the context ended before Run
// began.
func testCancelReturns(t *testing.T, ks testKeys, newHarness func(*testing.T) Harness) {
	for _, tc := range []struct {
		name  string
		setup func(r *runner)
		first func(r *runner) func(keys.Observation) string
	}{
		{"holding keys", func(r *runner) { r.setKeys(ks.ec[0]) }, func(r *runner) func(keys.Observation) string { return r.wantKeys(ks.ec[0]) }},
		{"missing", func(*runner) {}, func(r *runner) func(keys.Observation) string { return r.wantAbsent }},
		{"malformed", func(r *runner) { r.corrupt(Garbage) }, func(*runner) func(keys.Observation) string { return wantError }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRunner(t, newHarness(t))
			tc.setup(r)
			r.start()
			r.expect("the first observation", tc.first(r))
			t.Logf("Run returned %v after its context was canceled", r.stop().Round(time.Millisecond))
		})
	}
	t.Run("canceled before Run", func(t *testing.T) {
		r := newRunner(t, newHarness(t))
		r.setKeys(ks.ec[0])
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		done := make(chan error, 1)
		go func() { done <- r.h.Source.Run(ctx, r.rec.report) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run with a canceled context returned %v; want nil (the end of ctx is no error)", err)
			}
		case <-time.After(CancelWithin):
			t.Fatalf("Run with a canceled context did not return within %s", CancelWithin)
		}
		// Whatever it reported on the way out must still be free of private key material.
		for o, ok := r.rec.at(r.next); ok; o, ok = r.rec.at(r.next) {
			r.next++
			r.checkNoPrivateMaterial(o)
		}
	})
}
