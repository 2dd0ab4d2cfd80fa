package issuer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

type recorder struct {
	mu   sync.Mutex
	sets []*documents.Set
}

func (r *recorder) Publish(s *documents.Set) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sets = append(r.sets, s)
}

func newKey(t *testing.T) keys.Key {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := keys.NewPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return keys.Key{Public: pub, Phase: keys.PhaseActive}
}

const testIssuer = "https://oidc.example.test/clusters/a"

// TestFedIssuer: each key-set change is rendered once and the same documents reach every publisher;
// a failing observation keeps what is published; an unchanged set renders nothing.
func TestFedIssuer(t *testing.T) {
	p1, p2 := &recorder{}, &recorder{}
	var told []keys.Set
	iss, err := New(Config{
		Documents: documents.Config{IssuerURL: testIssuer, MaxAge: time.Hour}, FedSources: []string{"secret/ns/a-sa"},
		Publishers: []Publisher{p1, p2}, OnKeySet: func(s keys.Set) { told = append(told, s) },
		Now: func() time.Time { return time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if iss.Ready() || iss.Current() != nil {
		t.Fatal("ready before any observation")
	}
	k1, k2 := newKey(t), newKey(t)
	steps := []struct {
		obs      keys.Observation
		wantSets int
		wantKIDs []string
	}{
		{keys.Observation{Keys: []keys.Key{k1}}, 1, []string{k1.Public.KeyID()}},
		{keys.Observation{Keys: []keys.Key{k1}}, 1, []string{k1.Public.KeyID()}}, // unchanged: no render
		{keys.Observation{Err: errBad{}}, 1, []string{k1.Public.KeyID()}},        // bad: kept
		{keys.Observation{}, 1, []string{k1.Public.KeyID()}},                     // empty: kept
		{keys.Observation{Keys: []keys.Key{k2}}, 2, []string{k2.Public.KeyID()}},
	}
	for i, s := range steps {
		iss.Observe("secret/ns/a-sa", s.obs)
		if len(p1.sets) != s.wantSets || len(p2.sets) != s.wantSets || len(told) != s.wantSets {
			t.Fatalf("step %d: publishers got %d and %d sets, OnKeySet %d; want %d", i, len(p1.sets), len(p2.sets), len(told), s.wantSets)
		}
		last := p1.sets[len(p1.sets)-1]
		if p2.sets[len(p2.sets)-1] != last || iss.Current() != last {
			t.Fatalf("step %d: publishers were handed different documents", i)
		}
		if got := strings.Join(last.Keys.KeyIDs(), ","); got != strings.Join(s.wantKIDs, ",") {
			t.Fatalf("step %d: kids %s, want %v", i, got, s.wantKIDs)
		}
		if last.Generation != uint64(s.wantSets) {
			t.Fatalf("step %d: generation %d, want %d", i, last.Generation, s.wantSets)
		}
	}
	if !iss.Ready() || iss.URL() != testIssuer {
		t.Fatalf("Ready %v URL %s", iss.Ready(), iss.URL())
	}
	// An unknown source changes nothing.
	iss.Observe("secret/ns/other", keys.Observation{Keys: []keys.Key{k1}})
	if len(p1.sets) != 2 {
		t.Fatal("an unknown source's observation was published")
	}
}

type errBad struct{}

func (errBad) Error() string { return "bad secret" }

func TestNewRefuses(t *testing.T) {
	good := documents.Config{IssuerURL: testIssuer}
	for name, cfg := range map[string]Config{
		"bad issuer":          {Documents: documents.Config{IssuerURL: "http://x"}, FedSources: []string{"a"}},
		"no source":           {Documents: good},
		"run and fed sources": {Documents: good, FedSources: []string{"a"}, Sources: []keys.Source{nil}},
		"same source twice":   {Documents: good, FedSources: []string{"a", "a"}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}
