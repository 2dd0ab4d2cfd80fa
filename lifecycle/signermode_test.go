package lifecycle

import (
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/signingprobe"
)

const testKMSARN = "arn:aws:kms:eu-west-1:123456789012:key/0f8e6c1a-1b2c-4d5e-8f90-a1b2c3d4e5f6"

func newSignerState(t *testing.T) (*State, Record) {
	t.Helper()
	k, err := NewStagedRecord(AlgorithmES256, t0)
	if err != nil {
		t.Fatal(err)
	}
	st, err := NewSignerState(k.private, "", t0)
	if err != nil {
		t.Fatal(err)
	}
	return st, k
}

func TestNewSignerState(t *testing.T) {
	st, k := newSignerState(t)
	active, ok := st.Active()
	if !ok || active.KID != k.KID || !active.HasPrivateKey() || active.Phase != keys.PhaseActive {
		t.Fatalf("imported key: active %v (found %v), want %s with its private key", active, ok, k.KID)
	}
	if !st.Signer || st.Generation != 1 || !validStateID(st.ID) || !st.KeysChanged.Equal(t0) {
		t.Fatalf("state: signer %v, generation %d, id %q, keysChanged %s", st.Signer, st.Generation, st.ID, st.KeysChanged)
	}
	doc, err := MarshalDocument(st)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseDocument(doc)
	if err != nil {
		t.Fatalf("round trip: %v", err)
	}
	again, _ := MarshalDocument(back)
	if string(again) != string(doc) {
		t.Fatalf("round trip changed the document:\n%s\n%s", doc, again)
	}
	if got := back.Published(); len(got) != 1 || got[0].Phase != keys.PhaseActive {
		t.Fatalf("published %v: want the active key as active", got)
	}

	fresh, err := NewSignerState(nil, AlgorithmRS256, t0)
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := fresh.Active(); a.Algorithm != "RS256" || fresh.ID == st.ID {
		t.Fatalf("generated state: %v, id %s (imported one's %s)", a, fresh.ID, st.ID)
	}
	for _, bad := range [][]byte{[]byte("not a key"), k.Public.PEM()} {
		if _, err := NewSignerState(bad, "", t0); !errors.Is(err, ErrInvalid) || strings.Contains(err.Error(), "BEGIN") {
			t.Errorf("importing %.20q: %v, want ErrInvalid without the input", bad, err)
		}
	}
}

// TestSignerDocumentInvariants: what a signer-mode document may and must hold, and that a
// Secret-mode document stays as strict as before.
func TestSignerDocumentInvariants(t *testing.T) {
	st, _ := newSignerState(t)
	staged, err := NewStagedRecord(AlgorithmES256, t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(s *State)
		want   string
	}{
		{"valid with a staged key", func(s *State) { s.Keys = append(s.Keys, staged) }, ""},
		{"active without its private key", func(s *State) { s.Keys[0].private = nil }, "private key"},
		{"two active keys", func(s *State) { r := staged; r.Phase = keys.PhaseActive; s.Keys = append(s.Keys, r) }, "active keys"},
		{"no active key", func(s *State) { s.Keys = []Record{staged} }, "0 active keys"},
		{"previous with a private key", func(s *State) {
			r := staged
			r.Phase, r.PublishUntil = keys.PhasePrevious, t0
			s.Keys = append(s.Keys, r)
		}, "must not carry a private key"},
		{"active key held in KMS", func(s *State) { s.Keys[0].private, s.Keys[0].KMSKey = nil, testKMSARN }, ""},
		{"KMS key with a private key", func(s *State) { s.Keys[0].KMSKey = testKMSARN }, "must not carry a private key"},
		{"not a KMS key ARN", func(s *State) { s.Keys[0].private, s.Keys[0].KMSKey = nil, "arn:aws:iam::123456789012:role/x" }, "not a KMS key ARN"},
		{"KMS key in Secret mode", func(s *State) {
			s.Signer, s.ID, s.Generation, s.KeysChanged = false, "", 0, time.Time{}
			s.Keys[0].private, s.Keys[0].KMSKey = nil, testKMSARN
		}, "signer-mode states only"},
		{"no id", func(s *State) { s.ID = "" }, "id"},
		{"odd id", func(s *State) { s.ID = strings.Repeat("x", 15) + "/" }, "id"},
		{"generation 0", func(s *State) { s.Generation = 0 }, "generation"},
		{"following a signing-key Secret", func(s *State) { s.SigningSecret = "ns/sa" }, "signing-key Secret"},
		{"Secret mode with a generation", func(s *State) {
			s.Signer = false
			s.Keys[0].private = nil
		}, "signer-mode states only"},
		{"Secret mode with an active private key", func(s *State) { s.Signer, s.ID, s.Generation, s.KeysChanged = false, "", 0, time.Time{} }, "must not carry a private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := st.Clone()
			tc.mutate(s)
			doc, err := marshalUnchecked(s)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ParseDocument(doc)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			case err != nil && strings.Contains(err.Error(), "PRIVATE KEY-----"):
				t.Fatalf("the error quotes key material: %v", err)
			}
		})
	}
}

// marshalUnchecked renders a document without MarshalDocument's validation, to feed the parser
// documents this package would never write.
func marshalUnchecked(s *State) ([]byte, error) {
	doc := document{Version: DocumentVersion, SigningSecret: s.SigningSecret, Signer: s.Signer, ID: s.ID,
		Generation: s.Generation, KeysChanged: utc(s.KeysChanged)}
	for _, r := range s.Keys {
		doc.Keys = append(doc.Keys, docRecord{KID: r.KID, Phase: r.Phase, Algorithm: r.Algorithm, PublicKey: string(r.Public.PEM()),
			PrivateKey: string(r.private), KMSKey: r.KMSKey, Created: utc(r.Created), Promoted: utc(r.Promoted), PublishUntil: utc(r.PublishUntil)})
	}
	return json.Marshal(doc)
}

func signingObservation(at time.Time, kids ...string) signingprobe.Observation {
	return signingprobe.Observation{At: at, KIDs: kids, ValidFor: 3 * time.Minute}
}

func TestPromoteSigner(t *testing.T) {
	st, k1 := newSignerState(t)
	k2, err := NewStagedRecord(AlgorithmRS256, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Stage(k2); err != nil {
		t.Fatal(err)
	}
	const lead, hold = 10 * time.Minute, 26 * time.Hour
	if _, err := st.PromoteSigner(k2.KID, t0.Add(lead-time.Second), lead, hold, false); !errors.Is(err, ErrConflict) {
		t.Fatalf("promote before the lead: %v, want ErrConflict", err)
	}
	now := t0.Add(lead)
	tr, err := st.PromoteSigner(k2.KID, now, lead, hold, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr) != 2 {
		t.Fatalf("transitions %v, want two", tr)
	}
	a, _ := st.Active()
	if a.KID != k2.KID || !a.HasPrivateKey() || !a.Promoted.Equal(now) || !a.Promoting.IsZero() {
		t.Fatalf("active after promote: %+v", a)
	}
	prev, _ := st.Lookup(k1.KID)
	if prev.Phase != keys.PhasePrevious || prev.HasPrivateKey() || !prev.PublishUntil.Equal(now.Add(hold)) || !prev.Retired.Equal(now) {
		t.Fatalf("outgoing key after promote: %+v (private %v)", prev, prev.HasPrivateKey())
	}
	if err := st.validate(); err != nil {
		t.Fatalf("state after promote: %v", err)
	}
	if _, err := st.PromoteSigner(k1.KID, now, lead, hold, true); !errors.Is(err, ErrConflict) {
		t.Fatalf("promoting a previous key: %v, want ErrConflict", err)
	}
	secretMode := &State{}
	if _, err := secretMode.PromoteSigner(k2.KID, now, lead, hold, true); err == nil {
		t.Fatal("PromoteSigner on a Secret-mode state succeeded")
	}
}

// TestSignerModeManager runs the signer-mode lifecycle against a real kube-apiserver: the state
// Secret created from a signer's local copy, stage, promote in one write, generations, the data
// timestamp, and the refusals between modes and lineages.
func TestSignerModeManager(t *testing.T) {
	c, ns := kube(t)
	ctx := t.Context()
	clk := newClock(t0)
	ref := Ref{Namespace: ns, Name: stateName}
	cfg := Config{
		Secrets: c, StateSecret: ref, Signer: true, SignerRefresh: 30 * time.Second,
		MaxTokenLifetime: 24 * time.Hour, ClockSkew: 5 * time.Minute, MaxAge: time.Hour, PublishLead: testLead,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)), Now: clk.now,
	}
	m, err := NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Stage(ctx, AlgorithmES256); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "signer init") {
		t.Fatalf("stage before the state exists: %v, want a conflict naming signer init", err)
	}
	// A signing probe round before the signers wrote the state must not create a Secret-mode one.
	if err := m.RecordSigning(ctx, signingObservation(clk.now(), "kid")); !errors.Is(err, ErrConflict) {
		t.Fatalf("recording a signing observation before the state exists: %v, want ErrConflict", err)
	}
	if _, err := c.Secrets(ns).Get(ctx, stateName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the state Secret was created by a signing observation: %v", err)
	}
	local, k1 := newSignerState(t)
	got, res, err := m.store.Adopt(ctx, local)
	if err != nil || res != AdoptCreated || got.Generation != 1 {
		t.Fatalf("adopt into no Secret: %v, %s, generation %d", err, res, got.Generation)
	}
	k2, err := m.Stage(ctx, AlgorithmRS256)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := m.store.Read(ctx)
	if st.Generation != 2 || !st.Signer {
		t.Fatalf("after stage: generation %d, signer %v", st.Generation, st.Signer)
	}
	staged := st.KeysChanged
	clk.add(testLead)
	rec, err := m.Promote(ctx, k2.KID, false)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Phase != keys.PhaseActive || !rec.HasPrivateKey() {
		t.Fatalf("promoted: %+v", rec)
	}
	st, _ = m.store.Read(ctx)
	prev, _ := st.Lookup(k1.KID)
	if want := clk.now().Add(cfg.SignerRefresh + cfg.Retention()); !prev.PublishUntil.Equal(want) || prev.HasPrivateKey() {
		t.Fatalf("outgoing key: publish until %s (want %s), private %v", prev.PublishUntil, want, prev.HasPrivateKey())
	}
	if st.Generation != 3 || !st.KeysChanged.After(staged) && !st.KeysChanged.Equal(staged) {
		t.Fatalf("after promote: generation %d, keysChanged %s (staged at %s)", st.Generation, st.KeysChanged, staged)
	}
	snap, err := m.Snapshot(ctx)
	if err != nil || snap.Bundle != nil {
		t.Fatalf("snapshot: %v, bundle %v", err, snap.Bundle)
	}
	// A write that changes no key (a signing observation) moves the generation, not the keys' time.
	before := st.KeysChanged
	if err := m.RecordSigning(ctx, signingObservation(clk.now(), k2.KID)); err != nil {
		t.Fatal(err)
	}
	st, _ = m.store.Read(ctx)
	if st.Generation != 4 || !st.KeysChanged.Equal(before) {
		t.Fatalf("after a signing observation: generation %d, keysChanged %s (was %s)", st.Generation, st.KeysChanged, before)
	}
	// Reconcile prunes without a signing-key Secret.
	clk.add(cfg.SignerRefresh + cfg.Retention() + time.Second)
	if _, err := m.Reconcile(ctx); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	st, _ = m.store.Read(ctx)
	if _, ok := st.Lookup(k1.KID); ok {
		t.Fatal("the expired outgoing key was not pruned")
	}

	// The older local copy loses; a newer one of the same lineage wins; a foreign one is refused.
	if got, res, err := m.store.Adopt(ctx, local); err != nil || res != AdoptKept || got.Generation != st.Generation {
		t.Fatalf("adopting an older local copy: %v, %s, generation %d", err, res, got.Generation)
	}
	newer := st.Clone()
	newer.Generation += 10
	if _, res, err := m.store.Adopt(ctx, newer); err != nil || res != AdoptReplaced {
		t.Fatalf("adopting a newer local copy: %v, %s", err, res)
	}
	foreign, _ := newSignerState(t)
	foreign.Generation = 1000
	if _, _, err := m.store.Adopt(ctx, foreign); !errors.Is(err, ErrForeignState) {
		t.Fatalf("adopting a foreign state: %v, want ErrForeignState", err)
	}
	if st, _ := m.store.Read(ctx); st.ID != local.ID || st.Generation != newer.Generation {
		t.Fatalf("the state Secret changed after a refused adopt: id %s, generation %d", st.ID, st.Generation)
	}

	// A Secret-mode manager never touches a signer-mode state.
	secretMode, err := NewManager(Config{Secrets: c, StateSecret: ref, SigningSecret: Ref{Namespace: ns, Name: signingName},
		MaxTokenLifetime: time.Hour, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := secretMode.Stage(ctx, AlgorithmES256); !errors.Is(err, ErrConflict) {
		t.Fatalf("Secret-mode stage on a signer-mode state: %v, want ErrConflict", err)
	}
}
