package signingprobe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
)

// scriptedMinter answers each Mint with the next entry: a kid to sign with, or an error.
type scriptedMinter struct {
	mu     sync.Mutex
	answer []any // string kid or error
	calls  int
}

func (m *scriptedMinter) Mint(ctx context.Context) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.answer[m.calls%len(m.answer)]
	m.calls++
	switch v := a.(type) {
	case error:
		return "", v
	case string:
		if v == "garbage" {
			return "not-a-token", nil
		}
		return jws(fmt.Sprintf(`{"alg":"RS256","kid":%q}`, v), `{"sub":"secret-claims"}`), nil
	}
	return "", errors.New("bad script")
}

type recorded struct {
	mu   sync.Mutex
	obs  []Observation
	fail error
}

func (r *recorded) RecordSigning(_ context.Context, o Observation) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.obs = append(r.obs, o)
	return r.fail
}

var (
	forbidden  = apierrors.NewForbidden(schema.GroupResource{Resource: "serviceaccounts/token"}, "probe", errors.New("RBAC: no"))
	notFound   = apierrors.NewNotFound(schema.GroupResource{Resource: "serviceaccounts"}, "probe")
	connRefuse = &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
)

func TestRound(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name          string
		answers       []any
		published     []string
		recordErr     error
		wantKIDs      []string
		wantResult    string
		wantUp        float64
		wantUnpub     float64
		wantRecorded  int
		wantCounts    map[string]float64
		wantLastError string
	}{
		{name: "one key signs", answers: []any{"K1"}, published: []string{"K1", "K2"}, wantKIDs: []string{"K1"}, wantResult: ResultOK,
			wantUp: 1, wantRecorded: 1, wantCounts: map[string]float64{ResultOK: 3}},
		{name: "a roll in progress: two apiservers, two keys", answers: []any{"K2", "K1", "K2"}, published: []string{"K1", "K2"},
			wantKIDs: []string{"K1", "K2"}, wantResult: ResultOK, wantUp: 1, wantRecorded: 1, wantCounts: map[string]float64{ResultOK: 3}},
		{name: "a key nobody publishes", answers: []any{"K9"}, published: []string{"K1"}, wantKIDs: []string{"K9"}, wantResult: ResultOK,
			wantUp: 1, wantUnpub: 1, wantRecorded: 1, wantCounts: map[string]float64{ResultOK: 3}},
		{name: "one apiserver of three down: the round still counts", answers: []any{"K1", connRefuse, "K1"}, published: []string{"K1"},
			wantKIDs: []string{"K1"}, wantResult: ResultOK, wantUp: 1, wantRecorded: 1, wantCounts: map[string]float64{ResultOK: 2, ResultUnreachable: 1}},
		{name: "no RBAC", answers: []any{forbidden}, published: []string{"K1"}, wantResult: ResultForbidden,
			wantCounts: map[string]float64{ResultForbidden: 3}, wantLastError: "forbidden"},
		{name: "service account missing", answers: []any{notFound}, wantResult: ResultNotFound,
			wantCounts: map[string]float64{ResultNotFound: 3}, wantLastError: "not found"},
		{name: "API server down", answers: []any{connRefuse}, wantResult: ResultUnreachable,
			wantCounts: map[string]float64{ResultUnreachable: 3}, wantLastError: "connection refused"},
		{name: "an answer that is not a token", answers: []any{"garbage"}, wantResult: ResultBadToken,
			wantCounts: map[string]float64{ResultBadToken: 3}, wantLastError: "unreadable probe token"},
		{name: "recording fails: observed anyway, error shown", answers: []any{"K1"}, published: []string{"K1"}, recordErr: errors.New("state Secret unreadable"),
			wantKIDs: []string{"K1"}, wantResult: ResultOK, wantUp: 1, wantRecorded: 1, wantCounts: map[string]float64{ResultOK: 3},
			wantLastError: "recording the observation: state Secret unreadable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			rec := &recorded{fail: tc.recordErr}
			var logs bytes.Buffer
			p, err := New(Config{
				Minter: &scriptedMinter{answer: tc.answers}, ServiceAccount: "ns/probe", Interval: time.Minute,
				Published: func() []string { return tc.published }, Recorder: rec, Registerer: reg,
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
				Now:    func() time.Time { return now },
			})
			if err != nil {
				t.Fatal(err)
			}
			p.RunRound(context.Background())
			st := p.Status()
			if !slices.Equal(st.Signing, tc.wantKIDs) || st.Result != tc.wantResult {
				t.Errorf("status signing %v result %q, want %v %q", st.Signing, st.Result, tc.wantKIDs, tc.wantResult)
			}
			if tc.wantLastError == "" && st.LastError != "" || !strings.Contains(st.LastError, tc.wantLastError) {
				t.Errorf("lastError %q, want it to contain %q", st.LastError, tc.wantLastError)
			}
			if st.Fallback != (len(tc.wantKIDs) == 0) {
				t.Errorf("fallback %v with signing %v", st.Fallback, tc.wantKIDs)
			}
			if got := testutil.ToFloat64(p.up); got != tc.wantUp {
				t.Errorf("up = %v, want %v", got, tc.wantUp)
			}
			for result, want := range tc.wantCounts {
				if got := testutil.ToFloat64(p.probes.WithLabelValues(result)); got != want {
					t.Errorf("probes_total{result=%q} = %v, want %v", result, got, want)
				}
			}
			if got := testutil.CollectAndCount(p.observed); got != len(tc.wantKIDs) {
				t.Errorf("%d observed series, want %d", got, len(tc.wantKIDs))
			}
			for _, kid := range tc.wantKIDs {
				if got := testutil.ToFloat64(p.observed.WithLabelValues(kid)); got != 1 {
					t.Errorf("observed{kid=%q} = %v", kid, got)
				}
			}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, mf := range mfs {
				if mf.GetName() == "kube_oidc_issuer_signing_key_unpublished" && mf.GetMetric()[0].GetGauge().GetValue() != tc.wantUnpub {
					t.Errorf("unpublished = %v, want %v", mf.GetMetric()[0].GetGauge().GetValue(), tc.wantUnpub)
				}
			}
			if len(rec.obs) != tc.wantRecorded {
				t.Fatalf("recorded %d observations, want %d", len(rec.obs), tc.wantRecorded)
			}
			if tc.wantRecorded > 0 {
				o := rec.obs[0]
				if !o.At.Equal(now) || !slices.Equal(o.KIDs, tc.wantKIDs) || o.ValidFor != 2*time.Minute+3*DefaultTimeout {
					t.Errorf("recorded %+v", o)
				}
			}
			if strings.Contains(logs.String(), "secret-claims") || strings.Contains(logs.String(), "eyJ") {
				t.Errorf("a token reached the log:\n%s", logs.String())
			}
		})
	}
}

// TestFallbackAfterProbesStop: an observation stands for two intervals (and the probes'
// timeouts); after that the probe reports the fallback even though nothing new failed.
func TestFallbackAfterProbesStop(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	clock := now
	p, err := New(Config{Minter: &scriptedMinter{answer: []any{"K1"}}, Interval: time.Minute, ProbesPerRound: 1, Timeout: time.Second,
		Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	p.RunRound(context.Background())
	for _, tc := range []struct {
		after        time.Duration
		wantFallback bool
	}{{0, false}, {2*time.Minute + time.Second - time.Nanosecond, false}, {2*time.Minute + time.Second, true}} {
		clock = now.Add(tc.after)
		if got := p.Status().Fallback; got != tc.wantFallback {
			t.Errorf("%s after the round: fallback %v, want %v", tc.after, got, tc.wantFallback)
		}
		if got := p.Latest().Current(clock); got == tc.wantFallback {
			t.Errorf("%s after the round: current %v", tc.after, got)
		}
	}
}

// TestLogsChangesOnce: a steady failure is logged at warn once, then at debug; the recovery and
// every change of the signing set are logged again.
func TestLogsChangesOnce(t *testing.T) {
	m := &scriptedMinter{answer: []any{forbidden}}
	var logs bytes.Buffer
	p, err := New(Config{Minter: m, ProbesPerRound: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p.RunRound(ctx)
	p.RunRound(ctx)
	m.answer = []any{"K1"}
	p.RunRound(ctx)
	p.RunRound(ctx)
	m.answer = []any{"K2"}
	p.RunRound(ctx)
	out := logs.String()
	if n := strings.Count(out, "signing probe failed"); n != 1 {
		t.Errorf("failure logged %d times at info+, want once:\n%s", n, out)
	}
	if n := strings.Count(out, "the control plane signs with"); n != 2 {
		t.Errorf("signing set logged %d times, want twice (K1, then K2):\n%s", n, out)
	}
	if !strings.Contains(out, "hint=\"grant create on serviceaccounts/token") {
		t.Errorf("the forbidden failure does not say what to grant:\n%s", out)
	}
}

// TestRunStopsAndResets: Run probes at once, every interval after, and on return (leadership
// lost) leaves no observed series behind and says it is not running.
func TestRunStopsAndResets(t *testing.T) {
	m := &scriptedMinter{answer: []any{"K1"}}
	p, err := New(Config{Minter: m, Interval: 20 * time.Millisecond, ProbesPerRound: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		calls := m.calls
		m.mu.Unlock()
		if calls >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d probes in 5 s at a 20 ms interval", calls)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !p.Status().Running {
		t.Error("not running while Run runs")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p.Status().Running || testutil.CollectAndCount(p.observed) != 0 {
		t.Errorf("after Run returned: running %v, %d observed series", p.Status().Running, testutil.CollectAndCount(p.observed))
	}
}

// TestFreshConnections: through FreshConnections every request opens its own connection (what
// lets a connection-balancing load balancer spread probes over several kube-apiservers); a plain
// client-go configuration reuses one.
func TestFreshConnections(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Success"}`))
	}))
	srv.EnableHTTP2 = true
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	base := &rest.Config{Host: srv.URL, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	for _, tc := range []struct {
		name string
		cfg  *rest.Config
		want int64
	}{
		{name: "plain client-go", cfg: base, want: 1},
		{name: "fresh connections", cfg: FreshConnections(base), want: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conns.Store(0)
			hc, err := rest.HTTPClientFor(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			for range 5 {
				resp, err := hc.Get(srv.URL + "/version")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			hc.CloseIdleConnections()
			if got := conns.Load(); got != tc.want {
				t.Errorf("%d connections for 5 requests, want %d", got, tc.want)
			}
		})
	}
}
