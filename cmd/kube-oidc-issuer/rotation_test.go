package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
)

func TestServeRefusesBadRotationConfiguration(t *testing.T) {
	base := []string{"serve", "--issuer-url", "https://oidc.example.com", "--secret", "eksa-system/prod-sa"}
	// Signer mode: --state-secret and no other key source.
	signerBase := []string{"serve", "--issuer-url", "https://oidc.example.com", "--state-secret", "kube-oidc-issuer/signer-state"}
	cases := []struct {
		name    string
		args    []string
		wantErr string
		// args replace the base instead of extending it.
		full bool
	}{
		{"no key source at all", []string{"serve", "--issuer-url", "https://oidc.example.com"}, "--state-secret NAMESPACE/NAME alone for signer mode", true},
		{"signing secret in signer mode", slices.Concat(signerBase, []string{"--signing-secret", "eksa-system/prod-sa"}), "signer mode has no signing-key Secret", true},
		{"negative signer refresh", slices.Concat(signerBase, []string{"--signer-refresh", "-1s"}), "--signer-refresh -1s must not be negative", true},
		{"signer refresh in Secret mode", []string{"--state-secret", "eksa-system/lc", "--signer-refresh", "1m"}, "--signer-refresh needs signer mode", false},
		{"signer refresh without state", []string{"--signer-refresh", "1m"}, "--signer-refresh needs signer mode", false},
		{"KMS keys in Secret mode", []string{"--state-secret", "eksa-system/lc", "--kms-keys"}, "--kms-keys needs signer mode", false},
		{"KMS keys without state", []string{"--kms-keys"}, "--kms-keys needs signer mode", false},
		{"state secret with key files only", []string{"serve", "--issuer-url", "https://oidc.example.com", "--key-file", rsaTestKey, "--state-secret", "ns/lc"}, "--state-secret with --key-file needs a signing-key Secret", true},
		{"admin API without state", []string{"--admin-listen", ":8444"}, "--admin-listen needs --state-secret", false},
		{"scheduled rotation without state", []string{"--rotate-every", "720h"}, "--rotate-every needs --state-secret", false},
		{"signing secret without state", []string{"--signing-secret", "eksa-system/prod-sa"}, "needs --state-secret", false},
		{"leader election without a namespace", []string{"--leader-elect"}, "--leader-elect-namespace", false},
		{"state secret without namespace", []string{"--state-secret", "lifecycle"}, "--state-secret", false},
		{"state secret is the signing secret", []string{"--state-secret", "eksa-system/prod-sa"}, "must not be the signing-key Secret", false},
		{"signing secret not watched", []string{"--state-secret", "eksa-system/lc", "--signing-secret", "eksa-system/other-sa"}, "must also be a --secret", false},
		{"two secrets, no signing secret", []string{"--state-secret", "eksa-system/lc", "--secret", "eksa-system/old-keys"}, "give --signing-secret", false},
		{"zero token lifetime", []string{"--state-secret", "eksa-system/lc", "--max-token-lifetime", "0s"}, "--max-token-lifetime", false},
		{"rotation shorter than the lead", []string{"--state-secret", "eksa-system/lc", "--rotate-every", "30m"}, "longer than the publish lead 1h5m0s", false},
		{"unknown rotation algorithm", []string{"--state-secret", "eksa-system/lc", "--rotate-algorithm", "HS256"}, "--rotate-algorithm", false},
		{"admin API without TLS", []string{"--state-secret", "eksa-system/lc", "--admin-listen", ":8444"}, "needs TLS", false},
		{"empty admin token audience", []string{"--state-secret", "eksa-system/lc", "--admin-token-audience", "kube-oidc-issuer-admin,"}, "--admin-token-audience must not be empty", false},
		{"lease shorter than renew deadline", []string{"--state-secret", "eksa-system/lc", "--leader-elect", "--leader-elect-lease-duration", "5s"}, "lease-duration", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append(slices.Clone(base), tc.args...)
			if tc.full {
				args = tc.args
			}
			_, _, err := run(t, "", args...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestServeAcceptsSignerMode: --state-secret alone passes validation, with the lifecycle's other
// flags as in Secret mode; serve then stops at the kubeconfig, the first thing after validation
// that needs the cluster.
func TestServeAcceptsSignerMode(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "missing-kubeconfig")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"state secret alone", nil},
		{"explicit signer refresh", []string{"--signer-refresh", "0s"}},
		{"with rotation, admin API and leader election", []string{"--rotate-every", "720h", "--admin-listen", ":8444",
			"--tls-cert-file", "tls.crt", "--tls-key-file", "tls.key", "--leader-elect", "--signer-refresh", "1m"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"serve", "--issuer-url", "https://oidc.example.com", "--state-secret", "kube-oidc-issuer/signer-state",
				"--kubeconfig", kubeconfig, "--signing-probe-interval", "0s"}, tc.args...)
			_, _, err := run(t, "", args...)
			if err == nil || !strings.Contains(err.Error(), "loading Kubernetes client configuration") {
				t.Fatalf("err = %v, want validation to pass and the missing kubeconfig to stop serve", err)
			}
		})
	}

	so := serveOptions{}
	so.docs.MaxAge = time.Hour
	o := rotationOptions{stateSecret: "kube-oidc-issuer/signer-state", maxTokenLifetime: 24 * time.Hour, rotateAlgorithm: "RS256", signerRefresh: defaultSignerRefresh}
	if !o.signerMode(so) {
		t.Fatal("--state-secret alone is not signer mode")
	}
	if err := o.validate(so); err != nil {
		t.Fatalf("signer mode: %v", err)
	}
	for _, other := range []serveOptions{{secrets: []string{"ns/sa"}}, {keyFiles: []string{"sa.pub"}}} {
		if o.signerMode(other) {
			t.Errorf("signer mode with %+v", other)
		}
	}
}

// TestSignerStateSource: in signer mode the state is the only source, so a state without an
// active key (the Secret missing, or a Secret-mode state) must fail the observation rather than
// make serve ready with nothing to publish.
func TestSignerStateSource(t *testing.T) {
	data, err := os.ReadFile(rsaTestKey)
	if err != nil {
		t.Fatal(err)
	}
	pubs, err := keys.ParsePEM(rsaTestKey, data)
	if err != nil || len(pubs) != 1 {
		t.Fatalf("parsing %s: %d keys, %v", rsaTestKey, len(pubs), err)
	}
	bad := errors.New("watch failed")
	for _, tc := range []struct {
		name    string
		in      keys.Observation
		wantErr string
	}{
		{"missing Secret", keys.Observation{AllowEmpty: true}, "holds no signer-mode state"},
		{"Secret-mode state", keys.Observation{Keys: []keys.Key{{Public: pubs[0], Phase: keys.PhasePrevious}}, AllowEmpty: true}, "holds no signer-mode state"},
		{"read error kept", keys.Observation{Err: bad, AllowEmpty: true}, bad.Error()},
		{"signer-mode state", keys.Observation{Keys: []keys.Key{{Public: pubs[0], Phase: keys.PhaseActive}}, AllowEmpty: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := signerStateSource{Source: fixedSource{tc.in}, ref: lifecycle.Ref{Namespace: "kube-oidc-issuer", Name: "signer-state"}}
			var got []keys.Observation
			if err := src.Run(t.Context(), func(o keys.Observation) { got = append(got, o) }); err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 {
				t.Fatalf("%d observations, want 1", len(got))
			}
			o := got[0]
			if o.AllowEmpty {
				t.Error("an empty state is allowed: serve would be ready with nothing to publish")
			}
			switch {
			case tc.wantErr == "" && o.Err != nil:
				t.Errorf("err = %v", o.Err)
			case tc.wantErr != "" && (o.Err == nil || !strings.Contains(o.Err.Error(), tc.wantErr)):
				t.Errorf("err = %v, want it to contain %q", o.Err, tc.wantErr)
			}
			if len(o.Keys) != len(tc.in.Keys) {
				t.Errorf("%d keys, want %d", len(o.Keys), len(tc.in.Keys))
			}
		})
	}
}

// fixedSource reports one observation.
type fixedSource struct{ o keys.Observation }

func (fixedSource) Name() string { return "fixed" }

func (s fixedSource) Run(_ context.Context, report func(keys.Observation)) error {
	report(s.o)
	return nil
}

func TestRotationDefaults(t *testing.T) {
	so := serveOptions{secrets: []string{"ns/sa"}}
	so.docs.MaxAge = time.Hour
	o := rotationOptions{stateSecret: "ns/lc", maxTokenLifetime: 24 * time.Hour, rotateAlgorithm: "RS256"}
	if err := o.validate(so); err != nil {
		t.Fatal(err)
	}
	if got := o.lead(so); got != time.Hour+defaultMirrorAllowance {
		t.Errorf("default publish lead %s", got)
	}
	if ns, name, err := o.signingRef(so); err != nil || ns != "ns" || name != "sa" {
		t.Errorf("signing secret %s/%s %v", ns, name, err)
	}
	o.publishLead = 2 * time.Hour
	if got := o.lead(so); got != 2*time.Hour {
		t.Errorf("explicit publish lead %s", got)
	}
	so.tlsCertFile, so.tlsKeyFile = "pub.crt", "pub.key"
	if c, k := o.adminTLSFiles(so); c != "pub.crt" || k != "pub.key" {
		t.Errorf("admin TLS defaults to %s %s", c, k)
	}
	o.adminTLSCertFile, o.adminTLSKeyFile = "admin.crt", "admin.key"
	if c, k := o.adminTLSFiles(so); c != "admin.crt" || k != "admin.key" {
		t.Errorf("admin TLS %s %s", c, k)
	}
	// Zero options (no lifecycle) validate: serve without rotation is unchanged.
	if err := (rotationOptions{}).validate(so); err != nil {
		t.Errorf("no lifecycle: %v", err)
	}
}

func TestKeysCommandRefusesBadConfiguration(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no admin URL", []string{"keys", "list", "--token", "t"}, "--admin-url is required"},
		{"token and token file", []string{"keys", "list", "--admin-url", "https://127.0.0.1:1", "--token", "t", "--token-file", "f"}, "exclude each other"},
		{"plain http URL scheme typo", []string{"keys", "list", "--admin-url", "127.0.0.1:8444", "--token", "t"}, "want https://HOST:PORT"},
		{"bad output", []string{"keys", "list", "--admin-url", "https://127.0.0.1:1", "--token", "t", "-o", "yaml"}, "--output"},
		{"missing CA file", []string{"keys", "list", "--admin-url", "https://127.0.0.1:1", "--token", "t", "--admin-ca-file", "/nonexistent/ca.crt"}, "--admin-ca-file"},
		{"promote needs a kid", []string{"keys", "promote", "--admin-url", "https://127.0.0.1:1", "--token", "t"}, "accepts 1 arg"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, "", tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}
