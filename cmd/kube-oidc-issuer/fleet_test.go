package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestFleetOptionsValidate(t *testing.T) {
	base := func() serveOptions {
		o := serveOptions{}
		o.fleet = fleetOptions{enabled: true, template: "https://oidc.example.com/clusters/{cluster}", maxClusters: 10}
		o.docs.MaxAge = time.Hour
		o.rotation.maxTokenLifetime, o.rotation.clockSkew = 24*time.Hour, 5*time.Minute
		o.listeners.addFlags(pflag.NewFlagSet("defaults", pflag.ContinueOnError)) // the flags' defaults
		return o
	}
	tests := []struct {
		name    string
		mutate  func(*serveOptions)
		wantErr string
	}{
		{"fleet", func(*serveOptions) {}, ""},
		{"namespace placeholder", func(o *serveOptions) { o.fleet.template = "https://oidc.example.com/{namespace}/{cluster}" }, ""},
		{"no template", func(o *serveOptions) { o.fleet.template = "" }, "must contain {cluster}"},
		{"no cluster placeholder", func(o *serveOptions) { o.fleet.template = "https://oidc.example.com/{namespace}" }, "must contain {cluster}"},
		{"placeholder in the host", func(o *serveOptions) { o.fleet.template = "https://{cluster}.oidc.example.com" }, "placeholders belong in the path"},
		{"unknown placeholder", func(o *serveOptions) { o.fleet.template = "https://oidc.example.com/{region}/{cluster}" }, "only {cluster} and {namespace}"},
		{"trailing slash", func(o *serveOptions) { o.fleet.template = "https://oidc.example.com/{cluster}/" }, "renders invalid issuer URLs"},
		{"with --issuer-url", func(o *serveOptions) { o.docs.IssuerURL = "https://oidc.example.com" }, "--issuer-url does not apply to --fleet"},
		{"with --secret", func(o *serveOptions) { o.secrets = []string{"ns/a-sa"} }, "--secret does not apply to --fleet"},
		{"with --state-secret", func(o *serveOptions) { o.rotation.stateSecret = "ns/state" }, "--state-secret does not apply to --fleet"},
		{"with --iam-register", func(o *serveOptions) { o.iam.register = true }, "--iam-register does not apply to --fleet"},
		{"max clusters", func(o *serveOptions) { o.fleet.maxClusters = 0 }, "--fleet-max-clusters 0"},
		{"empty namespace", func(o *serveOptions) { o.fleet.namespaces = []string{""} }, "--fleet-namespace: empty"},
		{"template without --fleet", func(o *serveOptions) { o.fleet.enabled = false }, "need --fleet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base()
			tt.mutate(&o)
			err := o.validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("validate: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
	o := base()
	if got, want := o.fleet.fleetRetention(o), 24*time.Hour+5*time.Minute+time.Hour; got != want {
		t.Errorf("default retention %s, want %s", got, want)
	}
	o.fleet.retention = time.Minute
	if got := o.fleet.fleetRetention(o); got != time.Minute {
		t.Errorf("retention %s, want 1m", got)
	}
}
