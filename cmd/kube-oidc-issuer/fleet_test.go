package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spf13/pflag"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/fleet"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/leader"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/server"
)

// iamRegister sets --iam-register with the --iam-* flags' defaults, then mutate.
func iamRegister(mutate func(*serveOptions)) func(*serveOptions) {
	return func(o *serveOptions) {
		o.iam.addFlags(pflag.NewFlagSet("defaults", pflag.ContinueOnError))
		o.iam.register = true
		if mutate != nil {
			mutate(o)
		}
	}
}

func TestFleetOptionsValidate(t *testing.T) {
	base := func() serveOptions {
		o := serveOptions{}
		o.fleet = fleetOptions{enabled: true, template: "https://oidc.example.com/clusters/{cluster}", maxClusters: 10}
		o.docs.MaxAge = time.Hour
		o.rotation.maxTokenLifetime, o.rotation.clockSkew = 24*time.Hour, 5*time.Minute
		o.listeners.addFlags(pflag.NewFlagSet("defaults", pflag.ContinueOnError)) // the flags' defaults
		o.rotation.addFlags(pflag.NewFlagSet("defaults", pflag.ContinueOnError))
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
		{"with --iam-register", iamRegister(nil), ""},
		{"--iam-register with a namespace placeholder", iamRegister(func(o *serveOptions) { o.fleet.template = "https://oidc.example.com/{namespace}/{cluster}" }), ""},
		{"--iam-register, deleting removed clusters' providers", iamRegister(func(o *serveOptions) { o.fleet.iamDeleteRemoved = true }), ""},
		{"--iam-register with a port in the template", iamRegister(func(o *serveOptions) { o.fleet.template = "https://oidc.example.com:8443/clusters/{cluster}" }), "names port 8443"},
		{"a port in the template without --iam-register", func(o *serveOptions) { o.fleet.template = "https://oidc.example.com:8443/clusters/{cluster}" }, ""},
		{"--iam-register with a template too long for IAM", iamRegister(func(o *serveOptions) {
			o.fleet.template = "https://oidc.example.com/" + strings.Repeat("x", 240) + "/{cluster}"
		}), "characters long"},
		{"--iam-register without an audience", iamRegister(func(o *serveOptions) { o.iam.reg.audiences = nil }), "--iam-audience"},
		{"--iam-register with a bad interval", iamRegister(func(o *serveOptions) { o.iam.interval = 0 }), "--iam-interval"},
		{"--iam-tag with the fleet's managed-by tag", iamRegister(func(o *serveOptions) { o.iam.reg.tags = []string{"app.kubernetes.io/managed-by=me"} }), "the fleet's own tags"},
		{"--iam-tag with the fleet's cluster tag", iamRegister(func(o *serveOptions) { o.iam.reg.tags = []string{"kube-oidc-issuer/fleet-cluster=x"} }), "the fleet's own tags"},
		{"--iam-tag", iamRegister(func(o *serveOptions) { o.iam.reg.tags = []string{"team=platform"} }), ""},
		{"--fleet-iam-delete-removed without --iam-register", func(o *serveOptions) { o.fleet.iamDeleteRemoved = true }, "--fleet-iam-delete-removed needs --iam-register"},
		{"--fleet-iam-delete-removed without --fleet", func(o *serveOptions) { o.fleet = fleetOptions{iamDeleteRemoved: true} }, "need --fleet"},
		{"max clusters", func(o *serveOptions) { o.fleet.maxClusters = 0 }, "--fleet-max-clusters 0"},
		{"signing probes", func(o *serveOptions) {
			o.fleet.probeInterval, o.fleet.probeServiceAccount = time.Minute, "kube-system/default"
		}, ""},
		{"signing probe account", func(o *serveOptions) {
			o.fleet.probeInterval, o.fleet.probeServiceAccount = time.Minute, "default"
		}, "--fleet-signing-probe-service-account \"default\": want NAMESPACE/NAME"},
		{"admin API without TLS", func(o *serveOptions) { o.rotation.adminListen = "127.0.0.1:8443" }, "--admin-listen serves bearer tokens and needs TLS"},
		{"admin API", func(o *serveOptions) {
			o.rotation.adminListen, o.tlsCertFile, o.tlsKeyFile = "127.0.0.1:8443", "tls.crt", "tls.key"
		}, ""},
		{"scheduled rotation", func(o *serveOptions) { o.rotation.rotateEvery = 24 * time.Hour }, ""},
		{"signing secret", func(o *serveOptions) { o.rotation.signingSecret = "ns/a-sa" }, "--signing-secret does not apply to --fleet"},
		{"negative clock skew", func(o *serveOptions) { o.rotation.clockSkew = -time.Second }, "must not be negative"},
		{"rotation within the publish lead", func(o *serveOptions) { o.rotation.rotateEvery = time.Second }, "must be longer than the publish lead"},
		{"kms keys", func(o *serveOptions) { o.rotation.kmsKeys = true }, "--kms-keys do not apply to --fleet"},
		{"leader election without a namespace", func(o *serveOptions) { o.rotation.leaderElect = true }, "--leader-elect needs --leader-elect-namespace"},
		{"negative probe interval", func(o *serveOptions) { o.fleet.probeInterval = -time.Second }, "--fleet-signing-probe-interval -1s must not be negative"},
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

// TestSetupFleetWithIAM: --iam-register in fleet mode registers the leader-only reconcile, its
// metrics and an "iam" readiness check that is ready while nothing is registered yet; with
// --mirror too, both run. Nothing calls AWS or the Kubernetes API before the fleet runs.
func TestSetupFleetWithIAM(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "", "AWS_REGION": "us-east-1",
		"AWS_PROFILE": "", "AWS_CONFIG_FILE": filepath.Join(dir, "none"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "none"),
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL_IAM": "http://127.0.0.1:1",
	} {
		t.Setenv(k, v)
	}
	o := serveOptions{kubeconfig: kubeconfig}
	o.listeners.addFlags(pflag.NewFlagSet("defaults", pflag.ContinueOnError)) // the flags' defaults
	o.rotation.addFlags(pflag.NewFlagSet("defaults", pflag.ContinueOnError))
	o.docs.MaxAge = time.Hour
	o.fleet = fleetOptions{enabled: true, template: "https://oidc.example.com/clusters/{cluster}", maxClusters: 10, retention: time.Hour}
	o.mirror.targets, o.mirror.reconcile = []string{"file://" + filepath.Join(dir, "mirror")}, time.Minute
	iamRegister(func(o *serveOptions) { o.fleet.iamDeleteRemoved = true })(&o)
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	tasks := &recordedTasks{}
	_, checks, err := setupFleet(t.Context(), slog.New(slog.DiscardHandler), o, srv, reg, tasks, "test")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range checks {
		names = append(names, c.Name)
		if c.Name == "iam" {
			ready, detail := c.Check()
			st, ok := detail.(fleet.IAMStatus)
			if !ready || !ok || !st.DeleteRemoved || st.Thumbprint.Host != "https://oidc.example.com" {
				t.Errorf("iam check: ready %v, detail %+v", ready, detail)
			}
		}
	}
	if !slices.Equal(names, []string{"fleet", "mirrors", "iam"}) {
		t.Errorf("readiness checks %v, want fleet, mirrors, iam", names)
	}
	if !slices.Equal(tasks.names, []string{"fleet mirrors", "fleet iam-register"}) {
		t.Errorf("leader tasks %v, want the mirrors and the IAM registration", tasks.names)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(mfs, func(mf *dto.MetricFamily) bool { return mf.GetName() == "kube_oidc_issuer_fleet_iam_clusters" }) {
		t.Error("the fleet IAM metrics are not registered")
	}
}

type recordedTasks struct{ names []string }

func (r *recordedTasks) Go(name string, _ leader.Task) { r.names = append(r.names, name) }
