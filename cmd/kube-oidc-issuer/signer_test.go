package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/signerstate"
)

func TestSignerOptionsValidate(t *testing.T) {
	good := signerOptions{socket: "/run/koi/signer.sock", stateSecret: "kube-system/koi", stateCache: "/var/lib/koi/state.json",
		refreshHint: 10 * time.Second, maxTokenLifetime: 24 * time.Hour}
	for _, tc := range []struct {
		name   string
		mutate func(*signerOptions)
		want   string
	}{
		{"defaults", func(*signerOptions) {}, ""},
		{"no socket", func(o *signerOptions) { o.socket = "" }, "--socket is required"},
		{"no state Secret", func(o *signerOptions) { o.stateSecret = "" }, "--state-secret is required"},
		{"state Secret without namespace", func(o *signerOptions) { o.stateSecret = "koi" }, "NAMESPACE/NAME"},
		{"no cache", func(o *signerOptions) { o.stateCache = "" }, "--state-cache is required"},
		{"refresh hint 0", func(o *signerOptions) { o.refreshHint = 0 }, "--refresh-hint"},
		{"refresh hint not whole seconds", func(o *signerOptions) { o.refreshHint = 1500 * time.Millisecond }, "--refresh-hint"},
		{"token lifetime below kube-apiserver's minimum", func(o *signerOptions) { o.maxTokenLifetime = 5 * time.Minute }, "--max-token-lifetime"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.mutate(&o)
			err := o.validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

func TestSignerInit(t *testing.T) {
	dir := t.TempDir()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	keyFile := filepath.Join(dir, "sa.key")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	pub, _ := keys.NewPublicKey(&k.PublicKey)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "state.json")

	st, err := runSignerInit(signerInitOptions{stateCache: cache, importKey: keyFile}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := st.Active(); a.KID != pub.KeyID() {
		t.Fatalf("imported key has kid %s, want kube-apiserver's %s", a.KID, pub.KeyID())
	}
	if back, err := signerstate.ReadCache(cache); err != nil || back.ID != st.ID {
		t.Fatalf("reading the cache back: %v", err)
	}
	for _, tc := range []struct {
		name string
		o    signerInitOptions
		want string
	}{
		{"cache exists", signerInitOptions{stateCache: cache, algorithm: "ES256"}, "already exists"},
		{"both key options", signerInitOptions{stateCache: filepath.Join(dir, "a.json"), importKey: keyFile, algorithm: "ES256"}, "exactly one"},
		{"no key option", signerInitOptions{stateCache: filepath.Join(dir, "b.json")}, "exactly one"},
		{"missing directory", signerInitOptions{stateCache: filepath.Join(dir, "no", "c.json"), algorithm: "ES256"}, "does not exist"},
		{"bad algorithm", signerInitOptions{stateCache: filepath.Join(dir, "d.json"), algorithm: "HS256"}, "HS256"},
		{"public key imported", signerInitOptions{stateCache: filepath.Join(dir, "e.json"), importKey: rsaTestKey}, "--import-key"},
		{"FIFO imported", signerInitOptions{stateCache: filepath.Join(dir, "f.json"), importKey: fifo}, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runSignerInit(tc.o, time.Now())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "-----BEGIN") {
				t.Fatalf("the error quotes key material: %v", err)
			}
		})
	}
	if st, err := runSignerInit(signerInitOptions{stateCache: filepath.Join(dir, "fresh.json"), algorithm: "RS256"}, time.Now()); err != nil {
		t.Fatal(err)
	} else if a, _ := st.Active(); a.Algorithm != "RS256" {
		t.Fatalf("generated key %s", a.Algorithm)
	}
}
