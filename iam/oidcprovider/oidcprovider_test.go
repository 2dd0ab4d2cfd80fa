package oidcprovider

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam"
)

const (
	issuer = "https://oidc.example.com/clusters/prod-1"
	arn    = "arn:aws:iam::123456789012:oidc-provider/oidc.example.com/clusters/prod-1"
	tpA    = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	tpB    = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	tpC    = "cccccccccccccccccccccccccccccccccccccccc"
	tpD    = "dddddddddddddddddddddddddddddddddddddddd"
	tpE    = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
	tpF    = "ffffffffffffffffffffffffffffffffffffffff"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func desired(tps ...string) Desired {
	return Desired{URL: issuer, Audiences: []string{iam.DefaultAudience}, Thumbprints: tps}
}

func TestPlan(t *testing.T) {
	registered := func(tps []string, auds []string, tags map[string]string) *Provider {
		if tags == nil {
			tags = map[string]string{}
		}
		return &Provider{ARN: arn, Thumbprints: tps, Audiences: auds, Tags: tags}
	}
	sts := []string{iam.DefaultAudience}
	tests := []struct {
		name        string
		desired     Desired
		current     *Provider
		drift       []string
		thumbprints []string // nil: unchanged
		dropped     []string
		add, remove []string
		setTags     []string
	}{
		{
			name: "absent: create", desired: desired(tpA), current: nil,
			drift: []string{DriftMissing}, thumbprints: []string{tpA},
		},
		{
			name: "identical: nothing", desired: desired(tpA), current: registered([]string{tpA}, sts, nil),
		},
		{
			name: "registered thumbprint in upper case: nothing", desired: desired(tpA),
			current: registered([]string{strings.ToUpper(tpA)}, sts, nil),
		},
		{
			name: "same thumbprints in another order: nothing", desired: desired(tpA, tpB),
			current: registered([]string{tpB, tpA}, sts, nil),
		},
		{
			name: "CA change: new first, old kept", desired: desired(tpB), current: registered([]string{tpA}, sts, nil),
			drift: []string{DriftThumbprints}, thumbprints: []string{tpB, tpA},
		},
		{
			name: "still serving the old chain after the change: nothing", desired: desired(tpA),
			current: registered([]string{tpB, tpA}, sts, nil),
		},
		{
			name: "sixth thumbprint drops the oldest", desired: desired(tpF),
			current: registered([]string{tpE, tpD, tpC, tpB, tpA}, sts, nil),
			drift:   []string{DriftThumbprints}, thumbprints: []string{tpF, tpE, tpD, tpC, tpB}, dropped: []string{tpA},
		},
		{
			name: "prune keeps only the current ones", desired: func() Desired { d := desired(tpB); d.PruneThumbprints = true; return d }(),
			current: registered([]string{tpB, tpA}, sts, nil),
			drift:   []string{DriftThumbprints}, thumbprints: []string{tpB}, dropped: []string{tpA},
		},
		{
			name: "audiences added and removed", desired: Desired{URL: issuer, Audiences: []string{"sts.amazonaws.com", "vault"}, Thumbprints: []string{tpA}},
			current: registered([]string{tpA}, []string{"sts.amazonaws.com", "old-app", "other"}, nil),
			drift:   []string{DriftAudiences}, add: []string{"vault"}, remove: []string{"old-app", "other"},
		},
		{
			name: "tags: changed and missing set, others untouched",
			desired: Desired{URL: issuer, Audiences: sts, Thumbprints: []string{tpA},
				Tags: map[string]string{"team": "platform", "cluster": "prod-1", "env": "prod"}},
			current: registered([]string{tpA}, sts, map[string]string{"team": "infra", "Cluster": "prod-1", "owner": "someone"}),
			drift:   []string{DriftTags}, setTags: []string{"env", "team"},
		},
		{
			name: "everything at once", desired: Desired{URL: issuer, Audiences: []string{"x"}, Thumbprints: []string{tpB}, Tags: map[string]string{"k": "v"}},
			current:     registered([]string{tpA}, sts, nil),
			drift:       []string{DriftThumbprints, DriftAudiences, DriftTags},
			thumbprints: []string{tpB, tpA}, add: []string{"x"}, remove: sts, setTags: []string{"k"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := tt.desired.normalized()
			if err != nil {
				t.Fatal(err)
			}
			p := plan(d, tt.current)
			check := func(what string, got, want []string) {
				t.Helper()
				if !slices.Equal(got, want) {
					t.Errorf("%s = %q, want %q", what, got, want)
				}
			}
			check("drift", p.Drift(), tt.drift)
			check("thumbprints", p.Thumbprints, tt.thumbprints)
			check("dropped", p.DroppedThumbprints, tt.dropped)
			check("add audiences", p.AddAudiences, tt.add)
			check("remove audiences", p.RemoveAudiences, tt.remove)
			check("set tags", p.SetTags, tt.setTags)
			if p.UpToDate() != (len(tt.drift) == 0) {
				t.Errorf("UpToDate = %v with drift %v", p.UpToDate(), p.Drift())
			}
			if (tt.thumbprints == nil) != (p.Thumbprints == nil) {
				t.Errorf("thumbprints nil-ness: got %v, want %v", p.Thumbprints, tt.thumbprints)
			}
			if s := p.String(); s == "" || !strings.HasSuffix(s, "\n") {
				t.Errorf("String() = %q", s)
			}
		})
	}
}

func TestPlanString(t *testing.T) {
	d, _ := Desired{URL: issuer, Audiences: []string{"x"}, Thumbprints: []string{tpB}, Tags: map[string]string{"k": "v"}}.normalized()
	got := plan(d, &Provider{ARN: arn, Thumbprints: []string{tpA}, Audiences: []string{"sts.amazonaws.com"}}).String()
	want := "update OIDC provider " + arn + "\n" +
		"  thumbprints: " + tpA + " -> " + tpB + ", " + tpA + "\n" +
		"  audience:    add x\n" +
		"  audience:    remove sts.amazonaws.com\n" +
		"  tags:        set k=v\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	got = plan(d, nil).String()
	want = "create OIDC provider " + issuer + "\n  audiences:   x\n  thumbprints: " + tpB + "\n  tags:        k=v\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestReconcileCalls: each situation makes exactly the IAM calls it needs, in a safe order, and
// the second reconcile only reads.
func TestReconcileCalls(t *testing.T) {
	f := newFakeIAM()
	r := New(f, discard())
	ctx := t.Context()
	steps := []struct {
		name    string
		desired Desired
		calls   []string
	}{
		{"create", desired(tpA), []string{"ListOpenIDConnectProviders", "CreateOpenIDConnectProvider"}},
		{"no-op", desired(tpA), []string{"ListOpenIDConnectProviders", "GetOpenIDConnectProvider"}},
		{"thumbprint", desired(tpB), []string{"ListOpenIDConnectProviders", "GetOpenIDConnectProvider", "UpdateOpenIDConnectProviderThumbprint"}},
		{"audiences", Desired{URL: issuer, Audiences: []string{"a", "b"}, Thumbprints: []string{tpB}}, []string{
			"ListOpenIDConnectProviders", "GetOpenIDConnectProvider",
			"AddClientIDToOpenIDConnectProvider", "AddClientIDToOpenIDConnectProvider", "RemoveClientIDFromOpenIDConnectProvider",
		}},
		{"tags", Desired{URL: issuer, Audiences: []string{"a", "b"}, Thumbprints: []string{tpB}, Tags: map[string]string{"team": "x"}}, []string{
			"ListOpenIDConnectProviders", "GetOpenIDConnectProvider", "TagOpenIDConnectProvider",
		}},
		{"no-op again", Desired{URL: issuer, Audiences: []string{"b", "a"}, Thumbprints: []string{tpB}, Tags: map[string]string{"team": "x"}}, []string{
			"ListOpenIDConnectProviders", "GetOpenIDConnectProvider",
		}},
	}
	for _, s := range steps {
		p, err := r.Reconcile(ctx, s.desired)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if calls := f.takeCalls(); !slices.Equal(calls, s.calls) {
			t.Errorf("%s: calls %v, want %v", s.name, calls, s.calls)
		}
		if p.ARN != arn {
			t.Errorf("%s: ARN %q, want %q", s.name, p.ARN, arn)
		}
	}
	got := f.providers[arn]
	if !slices.Equal(got.Thumbprints, []string{tpB, tpA}) || !slices.Equal(got.Audiences, []string{"a", "b"}) || got.Tags["team"] != "x" {
		t.Errorf("final provider %+v", got)
	}

	// Another provider whose URL is a prefix or an extension of ours is not ours.
	f2 := newFakeIAM()
	for _, other := range []string{"https://oidc.example.com/clusters", "https://oidc.example.com/clusters/prod-10"} {
		if _, err := New(f2, discard()).Reconcile(ctx, Desired{URL: other, Audiences: []string{"x"}, Thumbprints: []string{tpA}}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := New(f2, discard()).Plan(ctx, desired(tpA))
	if err != nil || !p.Create {
		t.Fatalf("plan with only look-alike providers: %+v, %v; want create", p, err)
	}
}

func TestInvalidDesiredCallsNothing(t *testing.T) {
	tests := []struct {
		name string
		d    Desired
		want string
	}{
		{"port", Desired{URL: "https://oidc.example.com:8443", Audiences: []string{"a"}, Thumbprints: []string{tpA}}, "port"},
		{"http", Desired{URL: "http://oidc.example.com", Audiences: []string{"a"}, Thumbprints: []string{tpA}}, "https"},
		{"no audience", Desired{URL: issuer, Thumbprints: []string{tpA}}, "audience"},
		{"no thumbprint", Desired{URL: issuer, Audiences: []string{"a"}}, "no thumbprint"},
		{"bad thumbprint", Desired{URL: issuer, Audiences: []string{"a"}, Thumbprints: []string{"abc"}}, "40 hex"},
		{"six thumbprints", Desired{URL: issuer, Audiences: []string{"a"}, Thumbprints: []string{tpA, tpB, tpC, tpD, tpE, tpF}}, "at most 5"},
		{"aws: tag", Desired{URL: issuer, Audiences: []string{"a"}, Thumbprints: []string{tpA}, Tags: map[string]string{"aws:x": "y"}}, "reserved"},
		{"empty tag key", Desired{URL: issuer, Audiences: []string{"a"}, Thumbprints: []string{tpA}, Tags: map[string]string{"": "y"}}, "tag key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeIAM()
			_, err := New(f, discard()).Reconcile(t.Context(), tt.d)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one mentioning %q", err, tt.want)
			}
			if calls := f.takeCalls(); len(calls) != 0 {
				t.Errorf("called AWS: %v", calls)
			}
		})
	}
}

// TestAccessDenied: whichever call AWS refuses, the error names it, lists every action the issuer
// needs, and says how to print the policy.
func TestAccessDenied(t *testing.T) {
	tests := []struct {
		deny    string
		prepare Desired // reconciled before deny is set
		desired Desired
	}{
		{deny: "ListOpenIDConnectProviders", desired: desired(tpA)},
		{deny: "CreateOpenIDConnectProvider", desired: desired(tpA)},
		{deny: "GetOpenIDConnectProvider", prepare: desired(tpA), desired: desired(tpA)},
		{deny: "UpdateOpenIDConnectProviderThumbprint", prepare: desired(tpA), desired: desired(tpB)},
		{deny: "AddClientIDToOpenIDConnectProvider", prepare: desired(tpA), desired: Desired{URL: issuer, Audiences: []string{"sts.amazonaws.com", "x"}, Thumbprints: []string{tpA}}},
		{deny: "RemoveClientIDFromOpenIDConnectProvider", prepare: desired(tpA), desired: Desired{URL: issuer, Audiences: []string{"x"}, Thumbprints: []string{tpA}}},
		{deny: "TagOpenIDConnectProvider", prepare: desired(tpA), desired: Desired{URL: issuer, Audiences: []string{"sts.amazonaws.com"}, Thumbprints: []string{tpA}, Tags: map[string]string{"a": "b"}}},
	}
	for _, tt := range tests {
		t.Run(tt.deny, func(t *testing.T) {
			f := newFakeIAM()
			r := New(f, discard())
			if tt.prepare.URL != "" {
				if _, err := r.Reconcile(t.Context(), tt.prepare); err != nil {
					t.Fatal(err)
				}
			}
			f.deny = tt.deny
			_, err := r.Reconcile(t.Context(), tt.desired)
			var ade *AccessDeniedError
			if !errors.As(err, &ade) {
				t.Fatalf("error %v (%T), want *AccessDeniedError", err, err)
			}
			if ade.Action != "iam:"+tt.deny {
				t.Errorf("Action %q, want iam:%s", ade.Action, tt.deny)
			}
			msg := err.Error()
			for _, a := range iam.RequiredActions() {
				if !strings.Contains(msg, a) {
					t.Errorf("message does not name %s: %s", a, msg)
				}
			}
			for _, s := range []string{"kube-oidc-issuer iam-policy --issuer-url " + issuer, "not authorized"} {
				if !strings.Contains(msg, s) {
					t.Errorf("message lacks %q: %s", s, msg)
				}
			}
		})
	}
	// Other API errors are wrapped with what was being done, not called access problems.
	err := wrapAPIError("iam:GetOpenIDConnectProvider", "reading x", issuer, errors.New("boom"))
	var ade *AccessDeniedError
	if errors.As(err, &ade) || err.Error() != "reading x (iam:GetOpenIDConnectProvider): boom" {
		t.Errorf("plain error became %v", err)
	}
}

// TestLoop: status and metrics follow the reconciles: a creation, a no-op, a failure that is
// retried, and drift put back.
func TestLoop(t *testing.T) {
	f := newFakeIAM()
	current := desired(tpA)
	var failWith error
	l := NewLoop(New(f, discard()), LoopConfig{
		Desired: func(context.Context) (Desired, error) {
			if failWith != nil {
				return Desired{}, failWith
			}
			return current, nil
		},
		Logger: discard(),
	})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewStatusCollector(l.Status))
	ctx := t.Context()

	if s := l.Status(); !s.LastAttempt.IsZero() || s.Reconciles != 0 {
		t.Fatalf("status before the first run: %+v", s)
	}
	steps := []struct {
		name   string
		before func()
		errs   uint64
		drift  []string
	}{
		{"create", func() {}, 0, []string{DriftMissing}},
		{"no-op", func() {}, 0, nil},
		{"fetch fails", func() { failWith = errors.New("host unreachable") }, 1, nil},
		{"CA change", func() { failWith, current = nil, desired(tpB) }, 1, []string{DriftThumbprints}},
		{"deleted outside", func() { delete(f.providers, arn) }, 1, []string{DriftMissing}},
	}
	for i, s := range steps {
		s.before()
		err := l.Once(ctx)
		st := l.Status()
		if (err != nil) != (s.errs > 0 && failWith != nil) {
			t.Fatalf("%s: error %v", s.name, err)
		}
		if st.Reconciles != uint64(i+1) || st.Errors != s.errs {
			t.Errorf("%s: reconciles %d errors %d, want %d %d", s.name, st.Reconciles, st.Errors, i+1, s.errs)
		}
		if err == nil && (!slices.Equal(st.LastDrift, s.drift) || st.LastError != "" || st.LastSuccess != st.LastAttempt) {
			t.Errorf("%s: status %+v, want drift %v", s.name, st, s.drift)
		}
		if err != nil && !strings.Contains(st.LastError, "host unreachable") {
			t.Errorf("%s: lastError %q", s.name, st.LastError)
		}
	}
	st := l.Status()
	if st.ARN != arn || !slices.Equal(st.Thumbprints, []string{tpB}) {
		t.Errorf("final status %+v", st)
	}
	want := `
# HELP kube_oidc_issuer_iam_drift_total Differences between the IAM OIDC provider and the desired state that were found and corrected, by kind (missing, thumbprints, audiences, tags).
# TYPE kube_oidc_issuer_iam_drift_total counter
kube_oidc_issuer_iam_drift_total{kind="audiences"} 0
kube_oidc_issuer_iam_drift_total{kind="missing"} 2
kube_oidc_issuer_iam_drift_total{kind="tags"} 0
kube_oidc_issuer_iam_drift_total{kind="thumbprints"} 1
# HELP kube_oidc_issuer_iam_reconcile_errors_total Reconciles of the IAM OIDC provider that failed (thumbprint fetch or IAM call).
# TYPE kube_oidc_issuer_iam_reconcile_errors_total counter
kube_oidc_issuer_iam_reconcile_errors_total 1
# HELP kube_oidc_issuer_iam_reconciles_total Reconciles of the IAM OIDC provider attempted.
# TYPE kube_oidc_issuer_iam_reconciles_total counter
kube_oidc_issuer_iam_reconciles_total 5
# HELP kube_oidc_issuer_iam_provider_thumbprints Thumbprints registered on the IAM OIDC provider after the last successful reconcile (IAM keeps at most 5).
# TYPE kube_oidc_issuer_iam_provider_thumbprints gauge
kube_oidc_issuer_iam_provider_thumbprints 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"kube_oidc_issuer_iam_drift_total", "kube_oidc_issuer_iam_reconcile_errors_total",
		"kube_oidc_issuer_iam_reconciles_total", "kube_oidc_issuer_iam_provider_thumbprints"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg, "kube_oidc_issuer_iam_reconcile_last_success_timestamp_seconds"); err != nil || n != 1 {
		t.Errorf("last success metric: %d, %v", n, err)
	}
}

// TestLoopRunRetries: Run reconciles at once, retries a failure after RetryMin (doubling), goes
// back to Interval after a success, and returns nil when its context ends.
func TestLoopRunRetries(t *testing.T) {
	f := newFakeIAM()
	attempts := make(chan time.Time, 10)
	fails := 2
	l := NewLoop(New(f, discard()), LoopConfig{
		Desired: func(context.Context) (Desired, error) {
			attempts <- time.Now()
			if fails > 0 {
				fails--
				return Desired{}, errors.New("not yet")
			}
			return desired(tpA), nil
		},
		Interval: time.Hour,
		RetryMin: 20 * time.Millisecond,
		Logger:   discard(),
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var times []time.Time
	for range 3 {
		select {
		case at := <-attempts:
			times = append(times, at)
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d attempts", len(times))
		}
	}
	if d := times[1].Sub(times[0]); d < 20*time.Millisecond {
		t.Errorf("first retry after %s, want ≥ 20ms", d)
	}
	if d := times[2].Sub(times[1]); d < 40*time.Millisecond {
		t.Errorf("second retry after %s, want ≥ 40ms (doubled)", d)
	}
	select {
	case <-attempts:
		t.Error("reconciled again right after a success; want to wait Interval")
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run returned %v", err)
	}
	if st := l.Status(); st.Errors != 2 || st.LastError != "" || st.ARN != arn {
		t.Errorf("status %+v", st)
	}
}
