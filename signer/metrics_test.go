package signer

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	externaljwtv1 "k8s.io/externaljwt/apis/v1"
)

// TestCallMetrics: every call is counted by method and status code, over the real socket.
func TestCallMetrics(t *testing.T) {
	ks, err := NewStaticKeySet(newKey(t, "p256"))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	client, _ := serveOverSocket(t, Config{Keys: ks, Registerer: reg})
	_, claims := testClaims(t)
	for range 3 {
		if _, err := client.Sign(t.Context(), &externaljwtv1.SignJWTRequest{Claims: claims}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := client.Sign(t.Context(), &externaljwtv1.SignJWTRequest{Claims: "not base64!"}); err == nil {
		t.Fatal("signed bad claims")
	}
	if _, err := client.FetchKeys(t.Context(), &externaljwtv1.FetchKeysRequest{}); err != nil {
		t.Fatal(err)
	}
	calls, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range calls {
		if mf.GetName() != "kube_oidc_issuer_signer_calls_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			got[labels["method"]+"/"+labels["code"]] = s.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"Sign/OK": 3, "Sign/InvalidArgument": 1, "FetchKeys/OK": 1}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %v calls, want %v (all: %v)", k, got[k], v, got)
		}
	}
	if n := testutil.CollectAndCount(reg, "kube_oidc_issuer_signer_call_duration_seconds"); n != 2 {
		t.Errorf("%d duration series, want 2 (Sign, FetchKeys)", n)
	}
}
