package integration

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
)

// TestKeyFileSourcePlainHTTP runs `serve` the kubeadm way — a key file, plain HTTP behind an
// ingress, legacy empty-kid keys for pre-1.16 tokens — and replaces the file the way a Kubernetes
// volume does (atomic rename), expecting the new key without a restart.
func TestKeyFileSourcePlainHTTP(t *testing.T) {
	skipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	k1, k2 := newRSAKey(t, 2048), newRSAKey(t, 2048)
	keyFile := filepath.Join(dir, "sa.pub")
	writeFile(t, keyFile, k1.public)

	issuer := startServe(ctx, t, harness.IssuerConfig{
		Args:    []string{"--issuer-url", "https://oidc.example.com/kubeadm", "--key-file", keyFile, "--legacy-empty-kid", "--max-age", "5m"},
		LogPath: filepath.Join(dir, "issuer.log"),
	})

	jwksURL := "http://" + issuer.PublicAddr + "/kubeadm/openid/v1/jwks"
	fetch := func() (map[string]jwk, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, jwksURL, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", jwksURL, resp.StatusCode, body)
		}
		return parseJWKS(t, body), string(body), resp.Header
	}

	got, body, hdr := fetch()
	if _, ok := got[k1.kid(t)]; !ok || len(got) != 2 {
		t.Fatalf("want kid %s and the legacy copy, got %s", k1.kid(t), body)
	}
	if legacy, ok := got[""]; !ok || legacy.N != got[k1.kid(t)].N {
		t.Fatalf(`want a "kid":"" copy of the key: %s`, body)
	}
	if cc := hdr.Get("Cache-Control"); cc != "public, max-age=300" {
		t.Fatalf("Cache-Control %q", cc)
	}

	// Replace the file as kubelet replaces a projected volume: write elsewhere, rename over it.
	tmp := filepath.Join(dir, ".sa.pub.tmp")
	writeFile(t, tmp, k2.public)
	if err := os.Rename(tmp, keyFile); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, body, _ = fetch()
		if _, ok := got[k2.kid(t)]; ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new key file not served: %s\n%s", body, issuer.LogTail(3000))
		}
		time.Sleep(convergePeriod)
	}
	if _, old := got[k1.kid(t)]; old || len(got) != 2 {
		t.Fatalf("the file now holds only k2: %s", body)
	}

	// Garbage in the file keeps k2.
	writeFile(t, keyFile, []byte("truncated"))
	time.Sleep(time.Second) // the source re-reads after 100 ms of quiet and confirms errors once
	if got, body, _ = fetch(); len(got) != 2 || got[k2.kid(t)].Kid == "" {
		t.Fatalf("garbage changed the JWKS: %s", body)
	}
	if !strings.Contains(issuer.Log(), "still publishing its last good keys") {
		t.Fatalf("the failure was not logged:\n%s", issuer.LogTail(3000))
	}
}
