package signer

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	externaljwtv1 "k8s.io/externaljwt/apis/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// newKey generates a signing key: "rsa2048", "rsa3072", "p256", "p384" or "p521".
func newKey(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	var (
		k   crypto.Signer
		err error
	)
	switch kind {
	case "rsa2048":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "rsa3072":
		k, err = rsa.GenerateKey(rand.Reader, 3072)
	case "p256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "p521":
		k, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	default:
		t.Fatalf("unknown key kind %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func kidOf(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	kid, err := keys.KeyID(pub)
	if err != nil {
		t.Fatal(err)
	}
	return kid
}

// socketPath is a fresh socket path in a short private directory: t.TempDir() names can exceed
// the 107 bytes a unix socket path holds.
func socketPath(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sgn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, "signer.sock")
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// serveOverSocket runs a Server on a fresh unix socket and returns a real gRPC client dialed the
// way kube-apiserver dials it. Both stop when the test ends.
func serveOverSocket(t testing.TB, cfg Config) (externaljwtv1.ExternalJWTSignerClient, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := socketPath(t)
	lis, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return dial(t, path), path
}

func dial(t testing.TB, path string) externaljwtv1.ExternalJWTSignerClient {
	t.Helper()
	conn, err := grpc.NewClient("unix:"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("localhost"),
		grpc.WithDefaultCallOptions(grpc.WaitForReady(true)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return externaljwtv1.NewExternalJWTSignerClient(conn)
}

func callCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// testClaims is a payload shaped like kube-apiserver's, base64url as Sign receives it.
func testClaims(t testing.TB) (raw []byte, encoded string) {
	t.Helper()
	now := time.Now().Unix()
	raw, err := json.Marshal(map[string]any{
		"aud": []string{"sts.amazonaws.com"},
		"exp": now + 3600, "iat": now, "nbf": now,
		"iss": "https://oidc.example.com/clusters/prod",
		"jti": "5a0f4a0e-6c55-4b7c-9d36-9f0f6d3d5b0e",
		"kubernetes.io": map[string]any{
			"namespace":      "default",
			"serviceaccount": map[string]string{"name": "app", "uid": "0d5e1f3c-0e3a-4f7e-8d2a-1f0b6c2d9e11"},
		},
		"sub": "system:serviceaccount:default:app",
	})
	if err != nil {
		t.Fatal(err)
	}
	return raw, base64.RawURLEncoding.EncodeToString(raw)
}

// validateHeaderLikeKubeAPIServer applies the checks of kube-apiserver's external signer client
// (pkg/serviceaccount/externaljwt/plugin validateJWTHeader) to a Sign response.
func validateHeaderLikeKubeAPIServer(resp *externaljwtv1.SignJWTResponse) error {
	raw, err := base64.RawURLEncoding.DecodeString(resp.GetHeader())
	if err != nil {
		return fmt.Errorf("header is not RawURL base64: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var h struct {
		Alg string `json:"alg,omitempty"`
		Kid string `json:"kid,omitempty"`
		Typ string `json:"typ,omitempty"`
	}
	if err := dec.Decode(&h); err != nil {
		return fmt.Errorf("header JSON: %w", err)
	}
	switch {
	case h.Typ != "JWT":
		return errors.New("bad type")
	case h.Kid == "", len(h.Kid) > 1024:
		return errors.New("bad key id")
	}
	switch h.Alg {
	case "RS256", "ES256", "ES384", "ES512":
	default:
		return fmt.Errorf("bad signing algorithm %q", h.Alg)
	}
	if resp.GetSignature() == "" {
		return errors.New("empty signature")
	}
	return nil
}

// verifyToken checks the assembled token with go-jose against pub and returns its payload and
// protected header.
func verifyToken(t testing.TB, token string, pub crypto.PublicKey) ([]byte, jose.Header) {
	t.Helper()
	obj, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.ES384, jose.ES512})
	if err != nil {
		t.Fatalf("go-jose cannot parse the token: %v", err)
	}
	payload, err := obj.Verify(pub)
	if err != nil {
		t.Fatalf("go-jose rejects the signature: %v", err)
	}
	return payload, obj.Signatures[0].Protected
}

// keySetFunc adapts a function to KeySet.
type keySetFunc func(context.Context) (Snapshot, error)

func (f keySetFunc) Snapshot(ctx context.Context) (Snapshot, error) { return f(ctx) }
