package main

import (
	"strings"
	"testing"
	"time"
)

func TestServeRefusesBadRotationConfiguration(t *testing.T) {
	base := []string{"serve", "--issuer-url", "https://oidc.example.com", "--secret", "eksa-system/prod-sa"}
	cases := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"admin API without state", []string{"--admin-listen", ":8444"}, "--admin-listen needs --state-secret"},
		{"scheduled rotation without state", []string{"--rotate-every", "720h"}, "--rotate-every needs --state-secret"},
		{"signing secret without state", []string{"--signing-secret", "eksa-system/prod-sa"}, "needs --state-secret"},
		{"leader election without a namespace", []string{"--leader-elect"}, "--leader-elect-namespace"},
		{"state secret without namespace", []string{"--state-secret", "lifecycle"}, "--state-secret"},
		{"state secret is the signing secret", []string{"--state-secret", "eksa-system/prod-sa"}, "must not be the signing-key Secret"},
		{"signing secret not watched", []string{"--state-secret", "eksa-system/lc", "--signing-secret", "eksa-system/other-sa"}, "must also be a --secret"},
		{"two secrets, no signing secret", []string{"--state-secret", "eksa-system/lc", "--secret", "eksa-system/old-keys"}, "give --signing-secret"},
		{"zero token lifetime", []string{"--state-secret", "eksa-system/lc", "--max-token-lifetime", "0s"}, "--max-token-lifetime"},
		{"rotation shorter than the lead", []string{"--state-secret", "eksa-system/lc", "--rotate-every", "30m"}, "longer than the publish lead 1h5m0s"},
		{"unknown rotation algorithm", []string{"--state-secret", "eksa-system/lc", "--rotate-algorithm", "HS256"}, "--rotate-algorithm"},
		{"admin API without TLS", []string{"--state-secret", "eksa-system/lc", "--admin-listen", ":8444"}, "needs TLS"},
		{"empty admin token audience", []string{"--state-secret", "eksa-system/lc", "--admin-token-audience", "kube-oidc-issuer-admin,"}, "--admin-token-audience must not be empty"},
		{"lease shorter than renew deadline", []string{"--state-secret", "eksa-system/lc", "--leader-elect", "--leader-elect-lease-duration", "5s"}, "lease-duration"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, "", append(base, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
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
