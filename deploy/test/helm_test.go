package deploytest

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func chartDir() string { return filepath.Join(repoRoot, "deploy", "helm", "kube-oidc-issuer") }

// defaultValues is the smallest install: the issuer URL, the signing-key Secret in another
// namespace (as EKS Anywhere's eksa-system), and the example Ingress.
func defaultValues() map[string]any {
	return map[string]any{
		"issuerURL":        "https://oidc.example.com/clusters/prod-1",
		"signingKeySecret": map[string]any{"name": "prod-sa", "namespace": "koi-keys"},
		"ingress": map[string]any{
			"enabled": true, "className": "nginx", "host": "oidc.example.com",
			"path": "/clusters/prod-1", "tlsSecretName": "oidc-example-com-tls",
		},
	}
}

func TestHelmRenders(t *testing.T) {
	if _, err := renderHelm(chartDir(), "koi", "koi", map[string]any{}); err == nil || !strings.Contains(err.Error(), "issuerURL is required") {
		t.Errorf("without issuerURL: err = %v, want the chart to refuse", err)
	}
	for _, bad := range []map[string]any{
		{"issuerURL": "https://oidc.example.com/clusters/prod-1/"}, // trailing slash
		{"issuerURL": "http://oidc.example.com"},
		{"issuerURL": "https://oidc.example.com", "issuerUrl": "typo"},
		{"issuerURL": "https://oidc.example.com", "rotation": map[string]any{"enable": false}},
		{"issuerURL": "https://oidc.example.com", "admin": map[string]any{"tokenAudiences": []any{"a,b"}}}, // the flag would split it
		{"issuerURL": "https://oidc.example.com", "admin": map[string]any{"tokenAudiences": []any{""}}},
		{"issuerURL": "https://oidc.example.com", "signingProbe": map[string]any{"serviceAccount": "prober"}}, // no namespace
		{"issuerURL": "https://oidc.example.com", "signingProbe": map[string]any{"interval": "1 minute"}},
		{"issuerURL": "https://oidc.example.com", "signingProbe": map[string]any{"interval": "-1m"}},
		{"issuerURL": "https://oidc.example.com", "signingProbe": map[string]any{"count": 0}},
	} {
		if _, err := renderHelm(chartDir(), "koi", "koi", bad); err == nil {
			t.Errorf("values %v: want the chart's schema to refuse them", bad)
		}
	}
	objs, err := renderHelm(chartDir(), "koi", "koi", defaultValues())
	if err != nil {
		t.Fatal(err)
	}
	if find(objs, "Deployment", "koi", "koi-kube-oidc-issuer") == nil {
		t.Errorf("no Deployment koi/koi-kube-oidc-issuer")
	}
	notes, err := renderNotes(chartDir(), "koi", "koi", defaultValues())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"https://oidc.example.com/clusters/prod-1/.well-known/openid-configuration", "/clusters/prod-1/openid/v1/jwks", "koi-kube-oidc-issuer-keys-admin"} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES.txt lacks %q:\n%s", want, notes)
		}
	}
}

// TestHelmRendersSigningProbe: the signing probe's flags, and the one rule that lets the issuer mint
// tokens: for exactly the probe's ServiceAccount, in its namespace, and none when the probe is off.
// (TestHelmApply proves the rendered rules are enough against the API server.)
func TestHelmRendersSigningProbe(t *testing.T) {
	const full = "koi-kube-oidc-issuer"
	for _, c := range []struct {
		name     string
		probe    map[string]any
		wantArgs []string
		noArgs   []string // flag names that must not be passed
		// The serviceaccounts/token rules, as "Role NAMESPACE/NAME: RESOURCENAMES VERBS".
		wantRules []string
	}{
		{
			name:      "default: its own ServiceAccount",
			wantArgs:  []string{"--signing-probe-interval=1m", "--signing-probe-count=3"},
			noArgs:    []string{"--signing-probe-service-account"},
			wantRules: []string{"Role koi/" + full + "-signing-probe: [" + full + "] [create]"},
		},
		{
			name:      "another namespace's ServiceAccount",
			probe:     map[string]any{"serviceAccount": "koi-probe/prober", "interval": "30s", "count": 5},
			wantArgs:  []string{"--signing-probe-interval=30s", "--signing-probe-count=5", "--signing-probe-service-account=koi-probe/prober"},
			wantRules: []string{"Role koi-probe/" + full + "-signing-probe: [prober] [create]"},
		},
		{
			// The binary's default is 1m: off must be passed, and grants nothing.
			name:     "off",
			probe:    map[string]any{"interval": "0s", "serviceAccount": "koi-probe/prober"},
			wantArgs: []string{"--signing-probe-interval=0s"},
			noArgs:   []string{"--signing-probe-count", "--signing-probe-service-account"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			vals := defaultValues()
			if c.probe != nil {
				vals["signingProbe"] = c.probe
			}
			objs, err := renderHelm(chartDir(), "koi", "koi", vals)
			if err != nil {
				t.Fatal(err)
			}
			d := find(objs, "Deployment", "koi", full)
			if d == nil {
				t.Fatal("no Deployment")
			}
			args := toTyped[appsv1.Deployment](t, d).Spec.Template.Spec.Containers[0].Args
			for _, w := range c.wantArgs {
				if !slices.Contains(args, w) {
					t.Errorf("args %q lack %s", args, w)
				}
			}
			for _, n := range c.noArgs {
				if slices.ContainsFunc(args, func(a string) bool { return a == n || strings.HasPrefix(a, n+"=") }) {
					t.Errorf("args %q pass %s", args, n)
				}
			}
			if got := tokenRules(t, objs); !slices.Equal(got, c.wantRules) {
				t.Errorf("serviceaccounts/token rules:\n  got  %q\n  want %q", got, c.wantRules)
			}
			// A Role nobody is bound to grants nothing: the issuer's ServiceAccount is bound in
			// the Role's namespace.
			for _, r := range c.wantRules {
				ref, _, _ := strings.Cut(strings.TrimPrefix(r, "Role "), ":")
				ns, name, _ := strings.Cut(ref, "/")
				rb := find(objs, "RoleBinding", ns, name)
				if rb == nil {
					t.Errorf("no RoleBinding %s", ref)
					continue
				}
				b := toTyped[rbacv1.RoleBinding](t, rb)
				if b.RoleRef.Kind != "Role" || b.RoleRef.Name != name || !slices.Equal(b.Subjects, []rbacv1.Subject{{Kind: "ServiceAccount", Name: full, Namespace: "koi"}}) {
					t.Errorf("RoleBinding %s: roleRef %+v subjects %+v", ref, b.RoleRef, b.Subjects)
				}
			}
		})
	}
}

// tokenRules lists every rendered RBAC rule that covers serviceaccounts/token, wildcards included
// (RBAC's "*" and "*/token").
func tokenRules(t *testing.T, objs []*unstructured.Unstructured) []string {
	t.Helper()
	covers := func(res string) bool { return res == "serviceaccounts/token" || res == "*" || res == "*/token" }
	var out []string
	for _, o := range objs {
		if o.GetKind() != "Role" && o.GetKind() != "ClusterRole" {
			continue
		}
		for _, r := range toTyped[rbacv1.ClusterRole](t, o).Rules {
			if (slices.Contains(r.APIGroups, "") || slices.Contains(r.APIGroups, "*")) && slices.ContainsFunc(r.Resources, covers) {
				out = append(out, fmt.Sprintf("%s %s/%s: %v %v", o.GetKind(), o.GetNamespace(), o.GetName(), r.ResourceNames, r.Verbs))
			}
		}
	}
	return out
}

func TestHelmApply(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a := newAdmin(t)

	t.Run("secret source, rotation, admin API, ingress", func(t *testing.T) {
		start := time.Now()
		const ns, full = "koi", "koi-kube-oidc-issuer"
		a.ensureNamespace(t, ctx, ns, map[string]string{"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"})
		a.ensureNamespace(t, ctx, "koi-keys", nil)
		objs, err := renderHelm(chartDir(), "koi", ns, defaultValues())
		if err != nil {
			t.Fatal(err)
		}
		noWarnings(t, "chart", a.apply(t, ctx, objs))
		d := a.checkDeployment(t, ctx, ns, full, "--secret=koi-keys/prod-sa", "--state-secret=koi/"+full+"-lifecycle",
			"--leader-elect", "--leader-elect-lease-name="+full, "--admin-listen=:8444",
			"--signing-probe-interval=1m", "--signing-probe-count=3")
		a.podSecurityAdmits(t, ctx, d)
		a.checkServices(t, ctx, ns, full, full+"-metrics", full+"-admin")
		ing, err := a.cs.NetworkingV1().Ingresses(ns).Get(ctx, full, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		checkIngress(t, ing, "oidc.example.com", "/clusters/prod-1", full)
		issuerRBAC{
			saNamespace: ns, sa: full,
			signingNamespace: "koi-keys", signingKey: "prod-sa",
			stateNamespace: ns, state: full + "-lifecycle",
			leaseNamespace: ns, lease: full,
			probeNamespace: ns, probe: full, // its own
			admin: true,
		}.check(t, ctx, a)
		a.checkOperatorRoles(t, ctx, full+"-keys-admin", full+"-keys-viewer")
		t.Logf("rendered, applied and checked in %s", time.Since(start).Round(time.Millisecond))
	})

	t.Run("signing probe as another namespace's ServiceAccount", func(t *testing.T) {
		const ns, full, probeNS = "koi-sp", "koi-sp-kube-oidc-issuer", "koi-probe"
		a.ensureNamespace(t, ctx, ns, nil)
		a.ensureNamespace(t, ctx, probeNS, nil)
		a.ensureNamespace(t, ctx, "koi-keys", nil)
		vals := defaultValues()
		delete(vals, "ingress")
		vals["signingProbe"] = map[string]any{"serviceAccount": probeNS + "/prober"}
		objs, err := renderHelm(chartDir(), "koi-sp", ns, vals)
		if err != nil {
			t.Fatal(err)
		}
		noWarnings(t, "chart", a.apply(t, ctx, objs))
		a.checkDeployment(t, ctx, ns, full, "--signing-probe-service-account="+probeNS+"/prober", "--signing-probe-interval=1m")
		issuerRBAC{
			saNamespace: ns, sa: full,
			signingNamespace: "koi-keys", signingKey: "prod-sa",
			stateNamespace: ns, state: full + "-lifecycle",
			leaseNamespace: ns, lease: full,
			probeNamespace: probeNS, probe: "prober",
			admin: true,
		}.check(t, ctx, a)
	})

	t.Run("kubeadm key file", func(t *testing.T) {
		const ns, full = "koi-kubeadm", "koi-kubeadm-kube-oidc-issuer"
		a.ensureNamespace(t, ctx, ns, map[string]string{"pod-security.kubernetes.io/enforce": "privileged"})
		// With the signing probe off: check below proves that nothing lets it mint tokens then.
		vals := map[string]any{
			"issuerURL": "https://oidc.example.com/clusters/kubeadm", "keyFile": map[string]any{"enabled": true},
			"signingProbe": map[string]any{"interval": "0s"},
		}
		objs, err := renderHelm(chartDir(), "koi-kubeadm", ns, vals)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if o.GetKind() == "Secret" || o.GetKind() == "ClusterRoleBinding" || o.GetKind() == "ClusterRole" {
				t.Errorf("key-file install renders %s %s", o.GetKind(), o.GetName())
			}
		}
		noWarnings(t, "chart", a.apply(t, ctx, objs))
		d := a.checkDeployment(t, ctx, ns, full, "--key-file=/etc/kubernetes/pki/sa.pub", "--leader-elect", "--leader-elect-namespace="+ns,
			"--signing-probe-interval=0s")
		checkKubeadmPod(t, d)
		for _, arg := range d.Spec.Template.Spec.Containers[0].Args {
			if strings.HasPrefix(arg, "--secret") || strings.HasPrefix(arg, "--state-secret") || strings.HasPrefix(arg, "--admin") {
				t.Errorf("key-file install passes %s", arg)
			}
		}
		a.podSecurityAdmits(t, ctx, d)
		issuerRBAC{saNamespace: ns, sa: full, leaseNamespace: ns, lease: full}.check(t, ctx, a)
	})

	// Fleet mode, each in a release namespace of its own so that no other grant masks a denial.
	t.Run("fleet, watched namespaces", func(t *testing.T) {
		const ns, full = "koi-fleet", "koi-fleet-kube-oidc-issuer"
		a.ensureNamespace(t, ctx, ns, map[string]string{"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"})
		for _, w := range []string{"koi-fleet-capi-a", "koi-fleet-capi-b"} {
			a.ensureNamespace(t, ctx, w, nil)
		}
		objs, err := renderHelm(chartDir(), "koi-fleet", ns, fleetValues("koi-fleet-capi-a", "koi-fleet-capi-b"))
		if err != nil {
			t.Fatal(err)
		}
		noWarnings(t, "chart", a.apply(t, ctx, objs))
		d := a.checkDeployment(t, ctx, ns, full, "--fleet", "--issuer-url-template="+fleetTemplate,
			"--fleet-namespace=koi-fleet-capi-a", "--fleet-namespace=koi-fleet-capi-b", "--leader-elect", "--leader-elect-lease-name="+full)
		a.podSecurityAdmits(t, ctx, d)
		a.checkServices(t, ctx, ns, full, full+"-metrics", "")
		fleetRBAC{saNamespace: ns, sa: full, watched: []string{"koi-fleet-capi-a", "koi-fleet-capi-b"},
			leaseNamespace: ns, lease: full, unwatched: "koi-fleet-unwatched"}.check(t, ctx, a)
	})
	t.Run("fleet, every namespace", func(t *testing.T) {
		const ns, full = "koi-fleet-all", "koi-fleet-all-kube-oidc-issuer"
		a.ensureNamespace(t, ctx, ns, map[string]string{"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"})
		objs, err := renderHelm(chartDir(), "koi-fleet-all", ns, fleetValues())
		if err != nil {
			t.Fatal(err)
		}
		noWarnings(t, "chart", a.apply(t, ctx, objs))
		// The ClusterRoleBinding reads every Secret: gone when done.
		t.Cleanup(func() { a.deleteObjects(t, context.Background(), objs, "ClusterRoleBinding", "ClusterRole") })
		d := a.checkDeployment(t, ctx, ns, full, "--fleet", "--issuer-url-template="+fleetTemplate, "--leader-elect")
		a.podSecurityAdmits(t, ctx, d)
		fleetRBAC{saNamespace: ns, sa: full, leaseNamespace: ns, lease: full}.check(t, ctx, a)
	})
}

// TestHelmRendersSignerMode: signerMode.enabled serves the state Secret alone (no --secret, no
// signing-key Role) and grants the signers' user the state Secret, nothing else; it refuses a key
// file.
func TestHelmRendersSignerMode(t *testing.T) {
	const full = "koi-kube-oidc-issuer"
	vals := defaultValues()
	vals["signerMode"] = map[string]any{"enabled": true, "kmsKeys": true}
	objs, err := renderHelm(chartDir(), "koi", "koi", vals)
	if err != nil {
		t.Fatal(err)
	}
	d := find(objs, "Deployment", "koi", full)
	if d == nil {
		t.Fatal("no Deployment")
	}
	args := toTyped[appsv1.Deployment](t, d).Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "--state-secret=koi/"+full+"-lifecycle") || !slices.Contains(args, "--kms-keys") {
		t.Errorf("args %q: want --state-secret and --kms-keys", args)
	}
	if slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--secret=") }) {
		t.Errorf("args %q: signer mode has no --secret", args)
	}
	if find(objs, "Role", "koi", full+"-signing-key") != nil {
		t.Error("signer mode renders the signing-key Role")
	}
	role := find(objs, "Role", "koi", full+"-signer")
	rb := find(objs, "RoleBinding", "koi", full+"-signer")
	if role == nil || rb == nil {
		t.Fatal("no Role/RoleBinding for the signers")
	}
	rules := toTyped[rbacv1.Role](t, role).Rules
	if len(rules) != 1 || !slices.Equal(rules[0].ResourceNames, []string{full + "-lifecycle"}) || !slices.Equal(rules[0].Verbs, []string{"get", "list", "watch", "update"}) {
		t.Errorf("signer Role rules %+v", rules)
	}
	if s := toTyped[rbacv1.RoleBinding](t, rb).Subjects; len(s) != 1 || s[0].Kind != "User" || s[0].Name != "kube-oidc-issuer-signer" {
		t.Errorf("signer RoleBinding subjects %+v", s)
	}

	vals["keyFile"] = map[string]any{"enabled": true}
	if _, err := renderHelm(chartDir(), "koi", "koi", vals); err == nil || !strings.Contains(err.Error(), "signerMode.enabled") {
		t.Errorf("signer mode with a key file: %v, want a refusal", err)
	}
}
