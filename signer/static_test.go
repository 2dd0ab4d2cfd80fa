package signer

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4"
	externaljwtv1 "k8s.io/externaljwt/apis/v1"
)

func TestStaticKeySet(t *testing.T) {
	k1, k2, k3 := newKey(t, "p256"), newKey(t, "p384"), newKey(t, "p256")
	kid1, kid2, kid3 := kidOf(t, k1.Public()), kidOf(t, k2.Public()), kidOf(t, k3.Public())
	ctx := context.Background()

	if _, err := NewStaticKeySet(k1, k1); err == nil {
		t.Fatal("a key given twice was accepted")
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewStaticKeySet(small); err == nil {
		t.Fatal("a 1024-bit RSA key was accepted")
	}

	ks, err := NewStaticKeySet(k1, k2)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := ks.Snapshot(ctx)
	if ks.Active() != kid1 || kidsOf(first) != kid1+","+kid2 {
		t.Fatalf("active %s, published %s", ks.Active(), kidsOf(first))
	}
	if err := first.check(); err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		name    string
		do      func() error
		wantErr string
		active  string
		kids    string
	}{
		{"promote the second key", func() error { return ks.Promote(kid2) }, "", kid2, kid1 + "," + kid2},
		{"promote an unknown kid", func() error { return ks.Promote("nope") }, "no signing key", kid2, kid1 + "," + kid2},
		{"add a staged key", func() error { _, err := ks.Add(k3); return err }, "", kid2, kid1 + "," + kid2 + "," + kid3},
		{"add it again", func() error { _, err := ks.Add(k3); return err }, "already published", kid2, kid1 + "," + kid2 + "," + kid3},
		{"remove the active key", func() error { return ks.Remove(kid2) }, "promote another key first", kid2, kid1 + "," + kid2 + "," + kid3},
		{"promote the staged key", func() error { return ks.Promote(kid3) }, "", kid3, kid1 + "," + kid2 + "," + kid3},
		{"remove the first key", func() error { return ks.Remove(kid1) }, "", kid3, kid2 + "," + kid3},
		{"promote the removed key", func() error { return ks.Promote(kid1) }, "no signing key", kid3, kid2 + "," + kid3},
		{"publish a verification-only key", func() error { _, err := ks.Publish(k1.Public(), true); return err }, "", kid3, kid2 + "," + kid3 + "," + kid1},
		{"a verification-only key cannot sign", func() error { return ks.Promote(kid1) }, "no signing key", kid3, kid2 + "," + kid3 + "," + kid1},
		{"a private key is not a public key", func() error { _, err := ks.Publish(k1, false); return err }, "private key", kid3, kid2 + "," + kid3 + "," + kid1},
	}
	prev := first
	for _, s := range steps {
		err := s.do()
		if (err == nil) != (s.wantErr == "") || (err != nil && !strings.Contains(err.Error(), s.wantErr)) {
			t.Fatalf("%s: %v, want error %q", s.name, err, s.wantErr)
		}
		snap, _ := ks.Snapshot(ctx)
		if snap.Active.KeyID() != s.active || kidsOf(snap) != s.kids {
			t.Fatalf("%s: active %s published %s, want %s and %s", s.name, snap.Active.KeyID(), kidsOf(snap), s.active, s.kids)
		}
		if err := snap.check(); err != nil {
			t.Fatalf("%s: inconsistent snapshot: %v", s.name, err)
		}
		if changed := err == nil; changed != snap.Updated.After(prev.Updated) {
			t.Fatalf("%s: data timestamp %v after %v (changed=%v)", s.name, snap.Updated, prev.Updated, changed)
		}
		prev = snap
	}
	// Snapshots handed out earlier never change.
	if kidsOf(first) != kid1+","+kid2 || first.Active.KeyID() != kid1 {
		t.Fatalf("an old snapshot changed: %s", kidsOf(first))
	}
}

func kidsOf(s Snapshot) string {
	kids := make([]string, len(s.Published))
	for i, p := range s.Published {
		kids[i] = p.Public.KeyID()
	}
	return strings.Join(kids, ",")
}

// TestPromoteUnderConcurrentSigning: while the active key flips back and forth, every token
// verifies with the key its header names: header and signature always come from one snapshot.
func TestPromoteUnderConcurrentSigning(t *testing.T) {
	k1, k2 := newKey(t, "p256"), newKey(t, "rsa2048")
	pubs := map[string]crypto.PublicKey{kidOf(t, k1.Public()): k1.Public(), kidOf(t, k2.Public()): k2.Public()}
	ks, err := NewStaticKeySet(k1, k2)
	if err != nil {
		t.Fatal(err)
	}
	client, _ := serveOverSocket(t, Config{Keys: ks})
	_, claims := testClaims(t)

	const workers, perWorker = 8, 40
	stop := make(chan struct{})
	flipped := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				flipped <- n
				return
			default:
			}
			for kid := range pubs {
				_ = ks.Promote(kid)
				n++
			}
		}
	}()

	seen := make(map[string]int)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range perWorker {
				resp, err := client.Sign(callCtx(t), &externaljwtv1.SignJWTRequest{Claims: claims})
				if err != nil {
					t.Error(err)
					return
				}
				kid, err := verifyTokenAgainst(resp.Header+"."+claims+"."+resp.Signature, pubs)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[kid]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(stop)
	t.Logf("%d tokens while the active key flipped %d times; by kid: %v", workers*perWorker, <-flipped, seen)
	if len(seen) != 2 {
		t.Fatalf("expected tokens from both keys, got %v", seen)
	}
}

// verifyTokenAgainst verifies token with go-jose against the key its header names and returns
// that kid. It does not use t.Fatal, so that workers can call it.
func verifyTokenAgainst(token string, pubs map[string]crypto.PublicKey) (string, error) {
	obj, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		return "", fmt.Errorf("parsing the token: %w", err)
	}
	kid := obj.Signatures[0].Protected.KeyID
	pub, ok := pubs[kid]
	if !ok {
		return "", fmt.Errorf("the header names an unknown kid %q", kid)
	}
	if _, err := obj.Verify(pub); err != nil {
		return "", fmt.Errorf("token with kid %s does not verify with that key: %w", kid, err)
	}
	return kid, nil
}
