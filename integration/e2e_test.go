package integration

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
)

// TestTokensVerifyThroughIssuer: for each key type kube-apiserver can sign with, a token from the
// TokenRequest API verifies through the issuer's discovery document, and the issuer publishes
// exactly kube-apiserver's own keys and discovery document.
func TestTokensVerifyThroughIssuer(t *testing.T) {
	ecKey := func(t *testing.T) signingKey {
		priv, pub, err := pki.GenerateECDSAKeyPEM(elliptic.P256())
		if err != nil {
			t.Fatal(err)
		}
		return signingKey{name: "p256", private: priv, public: pub}
	}
	cases := []struct {
		name       string
		key        func(*testing.T) signingKey
		pathPrefix string
	}{
		{name: "RSA 2048", key: func(t *testing.T) signingKey { return newRSAKey(t, 2048) }},
		{name: "RSA 4096", key: func(t *testing.T) signingKey { return newRSAKey(t, 4096) }},
		{name: "ECDSA P-256", key: ecKey},
		{name: "issuer with path prefix", key: func(t *testing.T) signingKey { return newRSAKey(t, 2048) }, pathPrefix: "/clusters/workload-a"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			key := tc.key(t)
			s := newStack(t, stackOptions{signing: key, pathPrefix: tc.pathPrefix})

			token := s.mintToken(ctx)
			s.mustVerify(ctx, token)
			s.assertSameKeysAsAPIServer(ctx)

			ours, _ := s.ourJWKS(ctx)
			if _, ok := ours[key.kid(t)]; !ok || len(ours) != 1 {
				t.Fatalf("JWKS kids = %v, want exactly [%s]", keysOf(ours), key.kid(t))
			}
			// kube-apiserver renders the same discovery document for the same issuer and
			// jwks_uri: ours must be byte-identical.
			resp, disco := s.get(ctx, "/.well-known/openid-configuration")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("discovery: %d %s", resp.StatusCode, disco)
			}
			if theirs := s.apiserverGet(ctx, "/.well-known/openid-configuration"); !bytes.Equal(disco, theirs) {
				t.Fatalf("discovery differs from kube-apiserver's:\nours:   %s\ntheirs: %s", disco, theirs)
			}
			if got := resp.Header.Get("Content-Type"); got != "application/json" {
				t.Fatalf("discovery Content-Type %q", got)
			}
			if got := resp.Header.Get("Cache-Control"); got != "public, max-age=3600" {
				t.Fatalf("discovery Cache-Control %q", got)
			}
			// The path prefix is the issuer's: the same documents are not served at the root.
			if tc.pathPrefix != "" {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(s.issuerURL, tc.pathPrefix)+"/.well-known/openid-configuration", nil)
				r, err := s.relying.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				r.Body.Close()
				if r.StatusCode != http.StatusNotFound {
					t.Fatalf("discovery at the host root: %d, want 404", r.StatusCode)
				}
			}
		})
	}
}

// TestOldAndNewKeyPublished: after a rotation the Secret's tls.crt holds old and new public keys
// (the verification bundle), kube-apiserver signs with the new key and still accepts the old; tokens
// from both verify through the issuer.
func TestOldAndNewKeyPublished(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	oldKey, newKey := newRSAKey(t, 2048), newRSAKey(t, 2048)
	s := newStack(t, stackOptions{signing: oldKey})
	oldToken := s.mintToken(ctx)
	s.mustVerify(ctx, oldToken)

	// Rotate as an operator does: new key signs, the bundle keeps the old one.
	bundle := append(append([]byte{}, newKey.public...), oldKey.public...)
	s.writeSecret(ctx, map[string][]byte{"tls.crt": bundle, "tls.key": newKey.private})
	s.waitJWKS(ctx, 10*time.Second, func(m map[string]jwk) bool { return len(m) == 2 })
	if err := s.cluster.RestartAPIServer(ctx, func(c *testclusterConfig) {
		c.SigningKeyPEM = newKey.private
		c.VerificationKeysPEM = [][]byte{oldKey.public}
	}); err != nil {
		t.Fatal(err)
	}
	newToken := s.mintToken(ctx)
	if kidOf(t, newToken) != newKey.kid(t) {
		t.Fatalf("kube-apiserver did not sign with the new key")
	}
	s.mustVerify(ctx, oldToken)
	s.mustVerify(ctx, newToken)
	s.assertSameKeysAsAPIServer(ctx)

	// The active key (the one whose private half is in the Secret) is published first.
	_, body := s.ourJWKS(ctx)
	if i, j := bytes.Index(body, []byte(newKey.kid(t))), bytes.Index(body, []byte(oldKey.kid(t))); i < 0 || j < 0 || i > j {
		t.Fatalf("active key not first in %s", body)
	}
}

// TestSecretUpdateServedWithoutRestart: a changed Secret is served by the running issuer, through a
// watch; the time from the API write to the new JWKS being served is measured and printed.
func TestSecretUpdateServedWithoutRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k1, k2 := newRSAKey(t, 2048), newRSAKey(t, 2048)
	s := newStack(t, stackOptions{signing: k1})
	startPid := s.issuer.Pid()

	const rounds = 20
	var took []time.Duration
	for i := range rounds {
		next := k2
		if i%2 == 1 {
			next = k1
		}
		start := time.Now()
		s.writeSecret(ctx, map[string][]byte{"tls.crt": next.public, "tls.key": next.private})
		s.waitJWKS(ctx, 10*time.Second, func(m map[string]jwk) bool {
			_, ok := m[next.kid(t)]
			return ok && len(m) == 1
		})
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	t.Logf("Secret update → new JWKS served (%d updates, incl. the API write, polled every %s): min %s p50 %s p99 %s max %s",
		rounds, convergePeriod, took[0].Round(time.Millisecond), took[rounds/2].Round(time.Millisecond),
		took[(rounds*99)/100].Round(time.Millisecond), took[rounds-1].Round(time.Millisecond))

	// The last write left k1 in the Secret; have kube-apiserver sign with k1 again and verify.
	if s.issuer.Pid() != startPid {
		t.Fatal("issuer restarted")
	}
	s.mustVerify(ctx, s.mintToken(ctx))
}

// TestBadSecretKeepsLastGoodKeys: garbage in, or a deleted Secret, never changes what is served;
// the problem is visible on /readyz and in metrics, and tokens keep verifying.
func TestBadSecretKeepsLastGoodKeys(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	key := newRSAKey(t, 2048)
	s := newStack(t, stackOptions{signing: key})
	token := s.mintToken(ctx)
	_, before := s.ourJWKS(ctx)

	bad := []struct {
		name  string
		apply func()
	}{
		{"garbage in tls.crt", func() {
			s.writeSecret(ctx, map[string][]byte{"tls.crt": []byte("-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n"), "tls.key": key.private})
		}},
		{"private key replaced by text", func() {
			s.writeSecret(ctx, map[string][]byte{"tls.crt": []byte("hello"), "tls.key": []byte("world")})
		}},
		{"unknown layout", func() { s.writeSecret(ctx, map[string][]byte{"ca.crt": key.public}) }},
		{"emptied", func() { s.writeSecret(ctx, map[string][]byte{}) }},
		{"deleted", func() {
			if err := s.kube.CoreV1().Secrets(testNamespace).Delete(ctx, testSecret, deleteOpts()); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for i, b := range bad {
		b.apply()
		// Wait until the issuer has seen the bad input: the source's error count goes up.
		deadline := time.Now().Add(10 * time.Second)
		for !sourceErrorsAtLeast(s.metrics(ctx), i+1) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: issuer did not report the source error; metrics:\n%s", b.name, s.metrics(ctx))
			}
			time.Sleep(convergePeriod)
		}
		_, after := s.ourJWKS(ctx)
		if !bytes.Equal(before, after) {
			t.Fatalf("%s: JWKS changed:\nbefore %s\nafter  %s", b.name, before, after)
		}
		code, details := s.readyz(ctx)
		if code != http.StatusOK {
			t.Fatalf("%s: /readyz %d, want 200 (last good keys are served): %v", b.name, code, details)
		}
		src := firstSource(t, details)
		if src["healthy"] != false || src["lastError"] == "" {
			t.Fatalf("%s: /readyz does not show the failing source: %v", b.name, details)
		}
		if strings.Contains(s.issuer.Log(), "PRIVATE KEY") {
			t.Fatalf("%s: the issuer logged private key material", b.name)
		}
		s.mustVerify(ctx, token)
	}

	// And a good Secret again is picked up.
	s.writeSecret(ctx, map[string][]byte{"tls.crt": key.public, "tls.key": key.private})
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, details := s.readyz(ctx)
		if firstSource(t, details)["healthy"] == true {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("source did not recover: %v", details)
		}
		time.Sleep(convergePeriod)
	}
}

// TestNeverGoodSourceKeepsServerNotReady: until the Secret holds a key the documents answer 503 —
// never an empty JWKS — and /readyz is 503; once it appears, everything is served.
func TestNeverGoodSourceKeepsServerNotReady(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	key := newRSAKey(t, 2048)
	s := newStack(t, stackOptions{signing: key, noSecret: true})

	time.Sleep(500 * time.Millisecond) // let the informer sync and report "not found"
	for _, path := range []string{"/openid/v1/jwks", "/.well-known/openid-configuration"} {
		resp, body := s.get(ctx, path)
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("GET %s before any key: %d %s, want 503", path, resp.StatusCode, body)
		}
	}
	if code, details := s.readyz(ctx); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before any key: %d %v", code, details)
	}
	s.writeSecret(ctx, map[string][]byte{"tls.crt": key.public, "tls.key": key.private})
	if err := s.issuer.WaitReady(ctx, readyTimeout); err != nil {
		t.Fatal(err)
	}
	s.mustVerify(ctx, s.mintToken(ctx))
}
