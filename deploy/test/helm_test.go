package deploytest

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
			"--leader-elect", "--leader-elect-lease-name="+full, "--admin-listen=:8444")
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
			admin: true,
		}.check(t, ctx, a)
		a.checkOperatorRoles(t, ctx, full+"-keys-admin", full+"-keys-viewer")
		t.Logf("rendered, applied and checked in %s", time.Since(start).Round(time.Millisecond))
	})

	t.Run("kubeadm key file", func(t *testing.T) {
		const ns, full = "koi-kubeadm", "koi-kubeadm-kube-oidc-issuer"
		a.ensureNamespace(t, ctx, ns, map[string]string{"pod-security.kubernetes.io/enforce": "privileged"})
		vals := map[string]any{"issuerURL": "https://oidc.example.com/clusters/kubeadm", "keyFile": map[string]any{"enabled": true}}
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
		d := a.checkDeployment(t, ctx, ns, full, "--key-file=/etc/kubernetes/pki/sa.pub", "--leader-elect", "--leader-elect-namespace="+ns)
		checkKubeadmPod(t, d)
		for _, arg := range d.Spec.Template.Spec.Containers[0].Args {
			if strings.HasPrefix(arg, "--secret") || strings.HasPrefix(arg, "--state-secret") || strings.HasPrefix(arg, "--admin") {
				t.Errorf("key-file install passes %s", arg)
			}
		}
		a.podSecurityAdmits(t, ctx, d)
		issuerRBAC{saNamespace: ns, sa: full, leaseNamespace: ns, lease: full}.check(t, ctx, a)
	})
}
