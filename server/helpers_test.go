package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

const testIssuer = "https://issuer.example/cluster-a"

// renderedAt is a whole second so the timestamp metric compares exactly.
func renderedAt() time.Time { return time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC) }

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// tWriter sends log output to the test log, so it shows only for failing tests.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

func newTestKey(t testing.TB) keys.Key {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generating key: %v", err)
	}
	pub, err := keys.NewPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatalf("wrapping key: %v", err)
	}
	return keys.Key{Public: pub, Phase: keys.PhaseActive}
}

func renderTestSet(t testing.TB, issuer string, generation uint64, ks ...keys.Key) *documents.Set {
	t.Helper()
	if len(ks) == 0 {
		ks = []keys.Key{newTestKey(t)}
	}
	set, err := documents.Render(documents.Config{IssuerURL: issuer, MaxAge: documents.DefaultMaxAge},
		keys.NewSet(ks...), generation, renderedAt())
	if err != nil {
		t.Fatalf("rendering documents: %v", err)
	}
	return set
}

func newTestServer(t testing.TB, issuer string) (*Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := New(Config{IssuerURL: issuer, Logger: testLogger(t), Registerer: reg})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s, reg
}

// discardResponseWriter is the smallest reusable ResponseWriter: httptest.ResponseRecorder
// allocates on every use, which would hide the handler's own allocations.
type discardResponseWriter struct {
	header http.Header
	code   int
	n      int
}

func newDiscardResponseWriter() *discardResponseWriter {
	return &discardResponseWriter{header: make(http.Header, 8)}
}

func (w *discardResponseWriter) Header() http.Header  { return w.header }
func (w *discardResponseWriter) WriteHeader(code int) { w.code = code }
func (w *discardResponseWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	return len(p), nil
}

// reset prepares for the next request the way net/http hands each request a fresh writer, while
// keeping the map's storage.
func (w *discardResponseWriter) reset() {
	clear(w.header)
	w.code, w.n = 0, 0
}
