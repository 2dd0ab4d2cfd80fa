package deploytest

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

func kustomizeDir(parts ...string) string {
	return filepath.Join(append([]string{repoRoot, "deploy", "kustomize"}, parts...)...)
}

// TestKustomizeRenders runs without a cluster (also with -short): every kustomization builds.
func TestKustomizeRenders(t *testing.T) {
	for _, dir := range []string{"base", "examples/ingress", "overlays/eks-anywhere", "overlays/kubeadm", "overlays/signer-mode", "overlays/fleet", "overlays/fleet-namespaced"} {
		objs, err := renderKustomize(kustomizeDir(dir))
		if err != nil {
			t.Fatal(err)
		}
		if find(objs, "Deployment", "kube-oidc-issuer", "kube-oidc-issuer") == nil {
			t.Errorf("%s: no Deployment", dir)
		}
	}
}

// TestKustomizeApply applies each flavour to the real kube-apiserver in turn (kubeadm first: it
// grants the least, so its negative checks are not masked by what later flavours add).
func TestKustomizeApply(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a := newAdmin(t)
	const ns = "kube-oidc-issuer"
	base := issuerRBAC{
		saNamespace: ns, sa: "kube-oidc-issuer",
		signingNamespace: ns, signingKey: "signing-key",
		stateNamespace: ns, state: "kube-oidc-issuer-lifecycle",
		leaseNamespace: ns, lease: "kube-oidc-issuer",
		probeNamespace: ns, probe: "kube-oidc-issuer", // the default: the pod's own
		admin: true,
	}

	t.Run("overlays/kubeadm", func(t *testing.T) {
		start := time.Now()
		objs, err := renderKustomize(kustomizeDir("overlays", "kubeadm"))
		if err != nil {
			t.Fatal(err)
		}
		for _, gone := range []struct{ kind, ns, name string }{
			{"Role", ns, "kube-oidc-issuer-signing-key"}, {"Secret", ns, "kube-oidc-issuer-lifecycle"},
			{"Service", ns, "kube-oidc-issuer-admin"}, {"ClusterRoleBinding", "", "kube-oidc-issuer:auth-delegator"},
			{"ClusterRole", "", "kube-oidc-issuer-keys-admin"}, {"ClusterRole", "", "kube-oidc-issuer-keys-viewer"},
		} {
			if find(objs, gone.kind, gone.ns, gone.name) != nil {
				t.Errorf("kubeadm overlay still has %s %s", gone.kind, gone.name)
			}
		}
		warns := a.apply(t, ctx, objs)
		// The namespace enforces "privileged" (hostPath) but warns against "restricted": the
		// warning is expected, and proves warnings are seen at all.
		if !slices.ContainsFunc(warns, func(w string) bool { return strings.Contains(w, "hostPath") && strings.Contains(w, "restricted") }) {
			t.Errorf("want a Pod Security warning about the hostPath volume, got %q", warns)
		}
		d := a.checkDeployment(t, ctx, ns, "kube-oidc-issuer", "--key-file=/etc/kubernetes/pki/sa.pub", "--leader-elect", "--leader-elect-namespace="+ns,
			"--signing-probe-interval=1m")
		checkKubeadmPod(t, d)
		a.podSecurityAdmits(t, ctx, d)
		a.checkServices(t, ctx, ns, "kube-oidc-issuer", "kube-oidc-issuer-metrics", "")
		r := base
		r.signingKey, r.state, r.admin = "", "", false
		r.check(t, ctx, a)
		t.Logf("rendered, applied and checked in %s", time.Since(start).Round(time.Millisecond))
	})

	t.Run("base", func(t *testing.T) {
		start := time.Now()
		objs, err := renderKustomize(kustomizeDir("base"))
		if err != nil {
			t.Fatal(err)
		}
		noWarnings(t, "base", a.apply(t, ctx, objs))
		d := a.checkDeployment(t, ctx, ns, "kube-oidc-issuer", "--leader-elect", "--secret=kube-oidc-issuer/signing-key",
			"--state-secret=kube-oidc-issuer/kube-oidc-issuer-lifecycle", "--admin-listen=:8444", "--signing-probe-interval=1m")
		a.podSecurityAdmits(t, ctx, d) // the namespace enforces "restricted" now
		a.checkServices(t, ctx, ns, "kube-oidc-issuer", "kube-oidc-issuer-metrics", "kube-oidc-issuer-admin")
		base.check(t, ctx, a)
		a.checkOperatorRoles(t, ctx, "kube-oidc-issuer-keys-admin", "kube-oidc-issuer-keys-viewer")
		t.Logf("rendered, applied and checked in %s", time.Since(start).Round(time.Millisecond))
	})

	t.Run("examples/ingress", func(t *testing.T) {
		objs, err := renderKustomize(kustomizeDir("examples", "ingress"))
		if err != nil {
			t.Fatal(err)
		}
		noWarnings(t, "ingress example", a.apply(t, ctx, objs))
		ing, err := a.cs.NetworkingV1().Ingresses(ns).Get(ctx, "kube-oidc-issuer", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		checkIngress(t, ing, "oidc.example.com", "/clusters/prod-1", "kube-oidc-issuer")
		d := a.checkDeployment(t, ctx, ns, "kube-oidc-issuer", "--issuer-url=https://oidc.example.com/clusters/prod-1")
		_ = d
	})

	t.Run("overlays/eks-anywhere", func(t *testing.T) {
		a.ensureNamespace(t, ctx, "eksa-system", nil) // exists in an EKS Anywhere management cluster
		objs, err := renderKustomize(kustomizeDir("overlays", "eks-anywhere"))
		if err != nil {
			t.Fatal(err)
		}
		if find(objs, "Role", "eksa-system", "kube-oidc-issuer-signing-key") == nil || find(objs, "RoleBinding", "eksa-system", "kube-oidc-issuer-signing-key") == nil {
			t.Fatal("the signing-key Role and RoleBinding must be in eksa-system")
		}
		noWarnings(t, "eks-anywhere", a.apply(t, ctx, objs))
		d := a.checkDeployment(t, ctx, ns, "kube-oidc-issuer", "--secret=eksa-system/prod-sa", "--leader-elect", "--signing-probe-interval=1m")
		a.podSecurityAdmits(t, ctx, d)
		r := base
		r.signingNamespace, r.signingKey = "eksa-system", "prod-sa"
		r.check(t, ctx, a)
		// The cluster's other Secrets in eksa-system (kubeconfig, CA) stay out of reach.
		a.ensureSecret(t, ctx, "eksa-system", "prod-kubeconfig", map[string][]byte{"value": []byte("x")})
		_, err = a.impersonate(t, ns, "kube-oidc-issuer").CoreV1().Secrets("eksa-system").Get(ctx, "prod-kubeconfig", metav1.GetOptions{})
		expect(t, "get eksa-system/prod-kubeconfig", false, err)
	})

	t.Run("overlays/signer-mode", func(t *testing.T) {
		objs, err := renderKustomize(kustomizeDir("overlays", "signer-mode"))
		if err != nil {
			t.Fatal(err)
		}
		if find(objs, "Role", ns, "kube-oidc-issuer-signing-key") != nil {
			t.Error("signer mode has no signing-key Secret, but its Role is still there")
		}
		noWarnings(t, "signer-mode", a.apply(t, ctx, objs))
		d := a.checkDeployment(t, ctx, ns, "kube-oidc-issuer", "--state-secret=kube-oidc-issuer/kube-oidc-issuer-lifecycle", "--admin-listen=:8444", "--leader-elect")
		if args := d.Spec.Template.Spec.Containers[0].Args; slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--secret") }) {
			t.Errorf("signer-mode serve args %v: want no --secret", args)
		}
		a.podSecurityAdmits(t, ctx, d)
		r := base
		r.signingKey = ""
		r.check(t, ctx, a)

		// The signers' user reads and writes the state Secret, and nothing else.
		signer := a.impersonateUser(t, "kube-oidc-issuer-signer")
		sec, err := signer.CoreV1().Secrets(ns).Get(ctx, "kube-oidc-issuer-lifecycle", metav1.GetOptions{})
		expect(t, "signer: get the state secret", true, err)
		if sec != nil {
			sec.Annotations = map[string]string{"deploy-test/signer": time.Now().Format(time.RFC3339Nano)}
			_, err = signer.CoreV1().Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{})
			expect(t, "signer: update the state secret", true, err)
		}
		byName := metav1.ListOptions{FieldSelector: "metadata.name=kube-oidc-issuer-lifecycle"}
		_, err = signer.CoreV1().Secrets(ns).List(ctx, byName)
		expect(t, "signer: list the state secret by field selector", true, err)
		_, err = signer.CoreV1().Secrets(ns).Get(ctx, "unrelated", metav1.GetOptions{})
		expect(t, "signer: get another secret", false, err)
		_, err = signer.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "new"}}, metav1.CreateOptions{})
		expect(t, "signer: create a secret", false, err)
		_, err = signer.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
		expect(t, "signer: list kube-system secrets", false, err)

		// The static pod manifest is a valid Pod (server-side dry run in kube-system; a cluster's
		// controller-manager would have created the default ServiceAccount admission looks up).
		if _, err := a.cs.CoreV1().ServiceAccounts("kube-system").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		var pod corev1.Pod
		readYAML(t, filepath.Join(repoRoot, "deploy", "static-pod", "kube-oidc-issuer-signer.yaml"), &pod)
		if _, err := a.cs.CoreV1().Pods("kube-system").Create(ctx, &pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Errorf("static pod manifest: %v", err)
		}
		if args := pod.Spec.Containers[0].Args; !slices.Contains(args, "--state-secret=kube-oidc-issuer/kube-oidc-issuer-lifecycle") {
			t.Errorf("static pod args %v: want the overlay's state Secret", args)
		}
	})

	// Fleet mode last: switching an install to it prunes what the earlier flavours granted the same
	// ServiceAccount (kubectl apply --prune -l app.kubernetes.io/part-of=kube-oidc-issuer), so that
	// nothing left over masks a missing denial; its own grants are removed when done.
	for _, c := range []struct {
		dir  string
		rbac fleetRBAC
	}{
		{"overlays/fleet", fleetRBAC{saNamespace: ns, sa: "kube-oidc-issuer", leaseNamespace: ns, lease: "kube-oidc-issuer"}},
		{"overlays/fleet-namespaced", fleetRBAC{saNamespace: ns, sa: "kube-oidc-issuer", watched: []string{"eksa-system"},
			leaseNamespace: ns, lease: "kube-oidc-issuer", unwatched: "koi-fleet-unwatched"}},
	} {
		t.Run(c.dir, func(t *testing.T) {
			start := time.Now()
			a.ensureNamespace(t, ctx, "eksa-system", nil)
			objs, err := renderKustomize(kustomizeDir(c.dir))
			if err != nil {
				t.Fatal(err)
			}
			noWarnings(t, c.dir, a.apply(t, ctx, objs))
			t.Cleanup(func() {
				a.deleteObjects(t, context.Background(), objs, "ClusterRoleBinding", "ClusterRole", "RoleBinding", "Role")
			})
			if pruned := a.pruneRBAC(t, ctx, objs, "app.kubernetes.io/part-of=kube-oidc-issuer"); len(pruned) > 0 {
				t.Logf("pruned what earlier flavours left: %s", strings.Join(pruned, ", "))
			}
			d := a.checkDeployment(t, ctx, ns, "kube-oidc-issuer", "--fleet", "--issuer-url-template="+fleetTemplate, "--leader-elect")
			a.podSecurityAdmits(t, ctx, d)
			a.checkServices(t, ctx, ns, "kube-oidc-issuer", "kube-oidc-issuer-metrics", "")
			c.rbac.check(t, ctx, a)
			t.Logf("rendered, applied and checked in %s", time.Since(start).Round(time.Millisecond))
		})
	}
}

func checkKubeadmPod(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	spec := d.Spec.Template.Spec
	if _, ok := spec.NodeSelector["node-role.kubernetes.io/control-plane"]; !ok {
		t.Errorf("nodeSelector %v: want control-plane nodes", spec.NodeSelector)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool { return tl.Key == "node-role.kubernetes.io/control-plane" }) {
		t.Errorf("tolerations %+v: want the control-plane taint tolerated", spec.Tolerations)
	}
	var hp bool
	for _, v := range spec.Volumes {
		if v.HostPath != nil && v.HostPath.Path == "/etc/kubernetes/pki/sa.pub" {
			hp = true
		}
	}
	var ro bool
	for _, m := range spec.Containers[0].VolumeMounts {
		if m.MountPath == "/etc/kubernetes/pki/sa.pub" && m.ReadOnly {
			ro = true
		}
	}
	if !hp || !ro {
		t.Errorf("want sa.pub from the node, read-only: volumes %+v mounts %+v", spec.Volumes, spec.Containers[0].VolumeMounts)
	}
}

func checkIngress(t *testing.T, ing *networkingv1.Ingress, host, path, service string) {
	t.Helper()
	if len(ing.Spec.TLS) != 1 || !slices.Equal(ing.Spec.TLS[0].Hosts, []string{host}) || ing.Spec.TLS[0].SecretName == "" {
		t.Errorf("ingress TLS = %+v", ing.Spec.TLS)
	}
	if len(ing.Spec.Rules) != 1 || ing.Spec.Rules[0].Host != host || ing.Spec.Rules[0].HTTP == nil || len(ing.Spec.Rules[0].HTTP.Paths) != 1 {
		t.Fatalf("ingress rules = %+v", ing.Spec.Rules)
	}
	p := ing.Spec.Rules[0].HTTP.Paths[0]
	if p.Path != path || p.Backend.Service == nil || p.Backend.Service.Name != service || p.Backend.Service.Port.Name != "http" {
		t.Errorf("ingress path = %+v", p)
	}
}

// readYAML decodes one YAML object file into v.
func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
