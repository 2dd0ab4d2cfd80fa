package deploytest

import (
	"context"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
)

// Fleet mode (serve --fleet): the kustomize overlays fleet and fleet-namespaced and the chart's
// fleet.* values. What fleet mode may do is small and fixed: read Secrets (get, list, watch) where
// the clusters' <cluster>-sa Secrets are, record Events on refused ones (create, patch), and the
// Lease. These tests pin exactly that, rendered and against the API server, and run the binary
// with it.

const (
	// capiClusterLabel and capiSecretType are what Cluster API puts on a cluster's Secrets.
	capiClusterLabel = "cluster.x-k8s.io/cluster-name"
	capiSecretType   = "cluster.x-k8s.io/secret"
	// fleetTemplate is the issuer URL template of the overlays and of fleetValues.
	fleetTemplate = "https://oidc.example.com/clusters/{cluster}"
)

// The only rules fleet mode gets where it reads clusters' Secrets.
var fleetSecretRules = []string{`[""] [secrets] [] [get list watch]`, `[""] [events] [] [create patch]`}

// rbacObjects lists every rendered RBAC rule, as "KIND NS/NAME: GROUPS RESOURCES NAMES VERBS", and
// every binding, as "KIND NS/NAME -> ROLEKIND ROLENAME: SUBJECTS", both sorted.
func rbacObjects(t *testing.T, objs []*unstructured.Unstructured) (rules, bindings []string) {
	t.Helper()
	for _, o := range objs {
		switch o.GetKind() {
		case "Role", "ClusterRole":
			for _, r := range toTyped[rbacv1.ClusterRole](t, o).Rules {
				rules = append(rules, fmt.Sprintf("%s %s/%s: %s", o.GetKind(), o.GetNamespace(), o.GetName(), ruleString(r)))
			}
		case "RoleBinding", "ClusterRoleBinding":
			b := toTyped[rbacv1.RoleBinding](t, o)
			var subjects []string
			for _, s := range b.Subjects {
				subjects = append(subjects, s.Kind+" "+s.Namespace+"/"+s.Name)
			}
			bindings = append(bindings, fmt.Sprintf("%s %s/%s -> %s %s: %s", o.GetKind(), o.GetNamespace(), o.GetName(), b.RoleRef.Kind, b.RoleRef.Name, strings.Join(subjects, ", ")))
		}
	}
	slices.Sort(rules)
	slices.Sort(bindings)
	return rules, bindings
}

func ruleString(r rbacv1.PolicyRule) string {
	groups := make([]string, len(r.APIGroups))
	for i, g := range r.APIGroups {
		groups[i] = strconv.Quote(g)
	}
	if len(r.NonResourceURLs) > 0 {
		return fmt.Sprintf("nonResourceURLs %v %v", r.NonResourceURLs, r.Verbs)
	}
	return fmt.Sprintf("[%s] %v %v %v", strings.Join(groups, " "), r.Resources, r.ResourceNames, r.Verbs)
}

// prefixed returns each rule with prefix ("Role ns/name: ").
func prefixed(prefix string, rules []string) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = prefix + r
	}
	return out
}

func sorted(s ...[]string) []string {
	out := slices.Concat(s...)
	slices.Sort(out)
	return out
}

func deploymentArgs(t *testing.T, objs []*unstructured.Unstructured, ns, name string) []string {
	t.Helper()
	d := find(objs, "Deployment", ns, name)
	if d == nil {
		t.Fatalf("no Deployment %s/%s", ns, name)
	}
	return toTyped[appsv1.Deployment](t, d).Spec.Template.Spec.Containers[0].Args
}

// checkFleetArgs: fleet mode's flags, and none of the single-cluster ones (serve refuses them with
// --fleet, or, for the signing probe, would ignore them).
func checkFleetArgs(t *testing.T, args, want []string) {
	t.Helper()
	if len(args) < 2 || args[0] != "serve" || args[1] != "--fleet" {
		t.Errorf("args %q: want serve --fleet first", args)
	}
	for _, w := range want {
		if !slices.Contains(args, w) {
			t.Errorf("args %q lack %s", args, w)
		}
	}
	for _, a := range args {
		name, _, _ := strings.Cut(a, "=")
		switch name {
		case "--issuer-url", "--jwks-uri", "--secret", "--key-file", "--state-secret", "--signing-secret", "--rotate-every",
			"--admin-listen", "--admin-tls-cert-file", "--admin-tls-key-file", "--admin-token-audience", "--kms-keys",
			"--iam-register", "--s3-manage-bucket-policy", "--signing-probe-interval", "--signing-probe-count", "--signing-probe-service-account":
			t.Errorf("args %q: %s is not for fleet mode", args, name)
		}
	}
}

func TestKustomizeRendersFleet(t *testing.T) {
	const ns = "kube-oidc-issuer"
	lease := []string{
		`Role kube-oidc-issuer/kube-oidc-issuer: ["coordination.k8s.io"] [leases] [] [create]`,
		`Role kube-oidc-issuer/kube-oidc-issuer: ["coordination.k8s.io"] [leases] [kube-oidc-issuer] [get update]`,
	}
	leaseBinding := "RoleBinding kube-oidc-issuer/kube-oidc-issuer -> Role kube-oidc-issuer: ServiceAccount kube-oidc-issuer/kube-oidc-issuer"
	for _, c := range []struct {
		dir          string
		wantArgs     []string
		wantRules    []string
		wantBindings []string
	}{
		{
			dir:          "overlays/fleet",
			wantArgs:     []string{"--issuer-url-template=" + fleetTemplate, "--leader-elect", "--leader-elect-namespace=" + ns},
			wantRules:    sorted(lease, prefixed("ClusterRole /kube-oidc-issuer-fleet: ", fleetSecretRules)),
			wantBindings: sorted([]string{leaseBinding, "ClusterRoleBinding /kube-oidc-issuer-fleet -> ClusterRole kube-oidc-issuer-fleet: ServiceAccount kube-oidc-issuer/kube-oidc-issuer"}),
		},
		{
			dir:          "overlays/fleet-namespaced",
			wantArgs:     []string{"--fleet-namespace=eksa-system", "--issuer-url-template=" + fleetTemplate, "--leader-elect", "--leader-elect-namespace=" + ns},
			wantRules:    sorted(lease, prefixed("Role eksa-system/kube-oidc-issuer-fleet: ", fleetSecretRules)),
			wantBindings: sorted([]string{leaseBinding, "RoleBinding eksa-system/kube-oidc-issuer-fleet -> Role kube-oidc-issuer-fleet: ServiceAccount kube-oidc-issuer/kube-oidc-issuer"}),
		},
	} {
		t.Run(c.dir, func(t *testing.T) {
			objs, err := renderKustomize(kustomizeDir(c.dir))
			if err != nil {
				t.Fatal(err)
			}
			checkFleetArgs(t, deploymentArgs(t, objs, ns, "kube-oidc-issuer"), c.wantArgs)
			rules, bindings := rbacObjects(t, objs)
			if !slices.Equal(rules, c.wantRules) {
				t.Errorf("RBAC rules:\n  got  %s\n  want %s", strings.Join(rules, "\n       "), strings.Join(c.wantRules, "\n       "))
			}
			if !slices.Equal(bindings, c.wantBindings) {
				t.Errorf("bindings:\n  got  %s\n  want %s", strings.Join(bindings, "\n       "), strings.Join(c.wantBindings, "\n       "))
			}
			for _, o := range objs {
				if o.GetKind() == "Secret" || (o.GetKind() == "Service" && o.GetName() == "kube-oidc-issuer-admin") {
					t.Errorf("fleet mode renders %s %s", o.GetKind(), o.GetName())
				}
				if len(o.GetLabels()) == 0 || o.GetLabels()["app.kubernetes.io/part-of"] != "kube-oidc-issuer" {
					t.Errorf("%s %s lacks the label app.kubernetes.io/part-of", o.GetKind(), o.GetName())
				}
			}
			d := toTyped[appsv1.Deployment](t, find(objs, "Deployment", ns, "kube-oidc-issuer"))
			if spec := d.Spec.Template.Spec; len(spec.Volumes) > 0 || len(spec.Containers[0].VolumeMounts) > 0 || len(spec.Containers[0].Ports) != 2 {
				t.Errorf("volumes %+v, mounts %+v, ports %+v: want no admin TLS and the http and internal ports only", spec.Volumes, spec.Containers[0].VolumeMounts, spec.Containers[0].Ports)
			}
		})
	}
}

// fleetValues: fleet mode watching namespaces (nil: every namespace).
func fleetValues(namespaces ...string) map[string]any {
	f := map[string]any{"enabled": true, "issuerURLTemplate": fleetTemplate}
	if namespaces != nil {
		ns := make([]any, len(namespaces))
		for i, n := range namespaces {
			ns[i] = n
		}
		f["namespaces"] = ns
	}
	return map[string]any{"fleet": f}
}

func TestHelmRendersFleet(t *testing.T) {
	const full = "koi-kube-oidc-issuer"
	lease := []string{
		`Role koi/` + full + `: ["coordination.k8s.io"] [leases] [] [create]`,
		`Role koi/` + full + `: ["coordination.k8s.io"] [leases] [` + full + `] [get update]`,
	}
	leaseBinding := "RoleBinding koi/" + full + " -> Role " + full + ": ServiceAccount koi/" + full
	namespaced := fleetValues("eksa-system", "capi-prod")
	namespaced["fleet"].(map[string]any)["retention"] = "2h"
	namespaced["fleet"].(map[string]any)["maxClusters"] = 50
	for _, c := range []struct {
		name         string
		values       map[string]any
		wantArgs     []string
		noArgs       []string
		wantRules    []string
		wantBindings []string
	}{
		{
			name:   "every namespace",
			values: fleetValues(),
			wantArgs: []string{"--issuer-url-template=" + fleetTemplate, "--fleet-max-clusters=2000", "--max-token-lifetime=24h", "--max-age=1h",
				"--leader-elect", "--leader-elect-namespace=koi", "--leader-elect-lease-name=" + full},
			noArgs:    []string{"--fleet-namespace", "--fleet-retention"},
			wantRules: sorted(lease, prefixed("ClusterRole /"+full+":koi:fleet: ", fleetSecretRules)),
			wantBindings: sorted([]string{leaseBinding,
				"ClusterRoleBinding /" + full + ":koi:fleet -> ClusterRole " + full + ":koi:fleet: ServiceAccount koi/" + full}),
		},
		{
			name:     "namespaces",
			values:   namespaced,
			wantArgs: []string{"--fleet-namespace=eksa-system", "--fleet-namespace=capi-prod", "--fleet-retention=2h", "--fleet-max-clusters=50"},
			wantRules: sorted(lease,
				prefixed("Role eksa-system/"+full+"-fleet: ", fleetSecretRules),
				prefixed("Role capi-prod/"+full+"-fleet: ", fleetSecretRules)),
			wantBindings: sorted([]string{leaseBinding,
				"RoleBinding eksa-system/" + full + "-fleet -> Role " + full + "-fleet: ServiceAccount koi/" + full,
				"RoleBinding capi-prod/" + full + "-fleet -> Role " + full + "-fleet: ServiceAccount koi/" + full}),
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			objs, err := renderHelm(chartDir(), "koi", "koi", c.values)
			if err != nil {
				t.Fatal(err)
			}
			args := deploymentArgs(t, objs, "koi", full)
			checkFleetArgs(t, args, c.wantArgs)
			for _, n := range c.noArgs {
				if slices.ContainsFunc(args, func(a string) bool { return a == n || strings.HasPrefix(a, n+"=") }) {
					t.Errorf("args %q pass %s", args, n)
				}
			}
			rules, bindings := rbacObjects(t, objs)
			if !slices.Equal(rules, c.wantRules) {
				t.Errorf("RBAC rules:\n  got  %s\n  want %s", strings.Join(rules, "\n       "), strings.Join(c.wantRules, "\n       "))
			}
			if !slices.Equal(bindings, c.wantBindings) {
				t.Errorf("bindings:\n  got  %s\n  want %s", strings.Join(bindings, "\n       "), strings.Join(c.wantBindings, "\n       "))
			}
			for _, o := range objs {
				if o.GetKind() == "Secret" || (o.GetKind() == "Service" && o.GetName() == full+"-admin") {
					t.Errorf("fleet mode renders %s %s", o.GetKind(), o.GetName())
				}
			}
			d := toTyped[appsv1.Deployment](t, find(objs, "Deployment", "koi", full))
			if spec := d.Spec.Template.Spec; len(spec.Volumes) > 0 || len(spec.Containers[0].Ports) != 2 {
				t.Errorf("volumes %+v, ports %+v: want no admin TLS and the http and internal ports only", spec.Volumes, spec.Containers[0].Ports)
			}
			notes, err := renderNotes(chartDir(), "koi", "koi", c.values)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{fleetTemplate + "/openid/v1/jwks", "FleetClusterRefused", "docs/fleet.md"} {
				if !strings.Contains(notes, want) {
					t.Errorf("NOTES.txt lacks %q:\n%s", want, notes)
				}
			}
		})
	}

	// The schema: a template is required and must hold {cluster}, in the path.
	for _, tmpl := range []any{
		nil, // missing
		"",
		"https://oidc.example.com/clusters/{namespace}",    // no {cluster}
		"https://oidc.example.com/clusters/cluster",        // no placeholder at all
		"https://{cluster}.oidc.example.com/x",             // in the host
		"https://oidc.example.com/{region}/{cluster}",      // unknown placeholder
		"https://oidc.example.com/clusters/{cluster}/",     // trailing slash
		"http://oidc.example.com/clusters/{cluster}",       // not https
		"https://oidc.example.com/clusters/{cluster}?x=1",  // query
		"https://oidc.example.com/clusters/{cluster}#frag", // fragment
	} {
		f := map[string]any{"enabled": true}
		if tmpl != nil {
			f["issuerURLTemplate"] = tmpl
		}
		_, err := renderHelm(chartDir(), "koi", "koi", map[string]any{"fleet": f})
		if err == nil || !strings.Contains(err.Error(), "issuerURLTemplate") {
			t.Errorf("fleet.issuerURLTemplate %v: err = %v, want the schema to refuse it", tmpl, err)
		}
	}
	for _, ok := range []string{"https://oidc.example.com/{namespace}/{cluster}", "https://s3.eu-west-1.amazonaws.com/my-bucket/clusters/{cluster}", "https://oidc.example.com/{cluster}"} {
		v := fleetValues()
		v["fleet"].(map[string]any)["issuerURLTemplate"] = ok
		if _, err := renderHelm(chartDir(), "koi", "koi", v); err != nil {
			t.Errorf("fleet.issuerURLTemplate %s: %v", ok, err)
		}
	}
	for _, bad := range []map[string]any{
		{"namespaces": []any{"EKSA"}},
		{"namespaces": []any{"eksa-system", "eksa-system"}},
		{"retention": "2 hours"},
		{"maxClusters": 0},
		{"watch": "all"},
	} {
		v := fleetValues()
		for k, val := range bad {
			v["fleet"].(map[string]any)[k] = val
		}
		if _, err := renderHelm(chartDir(), "koi", "koi", v); err == nil {
			t.Errorf("fleet %v: want the schema to refuse it", bad)
		}
	}

	// Values of a single cluster, or of what fleet mode does not have yet, are refused with a
	// message naming them, not ignored.
	for _, c := range []struct {
		values map[string]any
		want   string
	}{
		{map[string]any{"issuerURL": "https://oidc.example.com/clusters/prod"}, "issuerURL"},
		{map[string]any{"jwksURI": "https://oidc.example.com/jwks"}, "jwksURI"},
		{map[string]any{"signingKeySecret": map[string]any{"name": "prod-sa", "namespace": "eksa-system"}}, "signingKeySecret"},
		{map[string]any{"keyFile": map[string]any{"enabled": true}}, "keyFile.enabled"},
		{map[string]any{"signerMode": map[string]any{"enabled": true}}, "signerMode.enabled"},
		{map[string]any{"rotation": map[string]any{"rotateEvery": "2160h"}}, "rotation.rotateEvery"},
		{map[string]any{"admin": map[string]any{"tokenAudiences": []any{"kube-oidc-issuer-admin"}}}, "admin.tokenAudiences"},
		{map[string]any{"signingProbe": map[string]any{"serviceAccount": "ops/prober"}}, "signing probe"},
		{map[string]any{"signingProbe": map[string]any{"interval": "30s"}}, "signing probe"},
		{map[string]any{"extraArgs": []any{"--mirror=s3://bucket", "--s3-manage-bucket-policy"}}, "--s3-manage-bucket-policy"},
		{map[string]any{"extraArgs": []any{"--secret=eksa-system/prod-sa"}}, "--secret"},
	} {
		v := fleetValues()
		for k, val := range c.values {
			v[k] = val
		}
		if _, err := renderHelm(chartDir(), "koi", "koi", v); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("fleet with %v: err = %v, want a refusal naming %s", c.values, err, c.want)
		}
	}
	// Off, or at their defaults, those values are fine; so is a mirror.
	v := fleetValues()
	v["signingProbe"] = map[string]any{"interval": "0s"}
	v["extraArgs"] = []any{"--mirror=s3://bucket/origin", "--s3-region=eu-west-1"}
	if _, err := renderHelm(chartDir(), "koi", "koi", v); err != nil {
		t.Errorf("fleet with the probe off and a mirror: %v", err)
	}
	// fleet.* without fleet.enabled is a mistake, not a no-op.
	if _, err := renderHelm(chartDir(), "koi", "koi", map[string]any{
		"issuerURL": "https://oidc.example.com/clusters/prod", "fleet": map[string]any{"issuerURLTemplate": fleetTemplate},
	}); err == nil || !strings.Contains(err.Error(), "need fleet.enabled") {
		t.Errorf("fleet.issuerURLTemplate without fleet.enabled: err = %v, want a refusal", err)
	}
}

// fleetRBAC is what a fleet issuer's ServiceAccount must be able to do, and nothing more.
type fleetRBAC struct {
	saNamespace, sa string
	// watched are the namespaces of the clusters' Secrets; empty: every namespace.
	watched               []string
	leaseNamespace, lease string
	// unwatched is a namespace the issuer must not read (with watched namespaces only).
	unwatched string
}

// check exercises the grants as the ServiceAccount, then asks the API server for every rule the
// ServiceAccount has (SelfSubjectRulesReview) beyond what any ServiceAccount has: exactly the
// fleet's rules where the Secrets are, the Lease's in its namespace, nothing anywhere else.
func (r fleetRBAC) check(t *testing.T, ctx context.Context, a *admin) {
	t.Helper()
	sa := a.impersonate(t, r.saNamespace, r.sa)
	readable := r.watched
	if len(readable) == 0 {
		readable = []string{r.saNamespace, "kube-system"}
	}
	for _, ns := range readable {
		a.ensureNamespace(t, ctx, ns, nil)
		a.ensureSecret(t, ctx, ns, "deploy-test-sa", map[string][]byte{"tls.crt": []byte("placeholder")})
		secrets := sa.CoreV1().Secrets(ns)
		sec, err := secrets.Get(ctx, "deploy-test-sa", metav1.GetOptions{})
		expect(t, "get a secret in "+ns, true, err)
		_, err = secrets.List(ctx, metav1.ListOptions{LabelSelector: capiClusterLabel})
		expect(t, "list the labelled secrets in "+ns, true, err)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		w, err := secrets.Watch(wctx, metav1.ListOptions{LabelSelector: capiClusterLabel})
		expect(t, "watch the labelled secrets in "+ns, true, err)
		if err == nil {
			w.Stop()
		}
		cancel()
		if sec != nil {
			sec.Annotations = map[string]string{"deploy-test/touched": "yes"}
			_, err = secrets.Update(ctx, sec, metav1.UpdateOptions{})
			expect(t, "update a secret in "+ns, false, err)
		}
		_, err = secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "new"}}, metav1.CreateOptions{})
		expect(t, "create a secret in "+ns, false, err)
		err = secrets.Delete(ctx, "deploy-test-sa", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		expect(t, "delete a secret in "+ns, false, err)
		checkFleetEvent(t, ctx, a, sa, ns, "deploy-test-sa", true)
	}
	_, err := sa.CoreV1().Secrets(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: capiClusterLabel})
	expect(t, "list the labelled secrets of every namespace", len(r.watched) == 0, err)
	if r.unwatched != "" {
		a.ensureNamespace(t, ctx, r.unwatched, nil)
		a.ensureSecret(t, ctx, r.unwatched, "unrelated", map[string][]byte{"password": []byte("hunter2")})
		_, err = sa.CoreV1().Secrets(r.unwatched).Get(ctx, "unrelated", metav1.GetOptions{})
		expect(t, "get a secret in the unwatched "+r.unwatched, false, err)
		_, err = sa.CoreV1().Secrets(r.unwatched).List(ctx, metav1.ListOptions{})
		expect(t, "list the secrets in the unwatched "+r.unwatched, false, err)
		checkFleetEvent(t, ctx, a, sa, r.unwatched, "unrelated", false)
	}
	checkLease(t, ctx, sa, r.leaseNamespace, r.lease)
	// Nothing of the single-cluster issuer: no TokenReview (admin API), no token minting (probe).
	_, err = sa.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: "not-a-token"}}, metav1.CreateOptions{})
	expect(t, "create tokenreview", false, err)
	_, err = probeToken(ctx, sa, r.saNamespace, r.sa)
	expect(t, "create a token for its own ServiceAccount", false, err)

	// Exactly these rules, as the API server evaluates them.
	namespaces := slices.Concat(readable, []string{r.leaseNamespace})
	if r.unwatched != "" {
		namespaces = append(namespaces, r.unwatched)
	}
	for _, ns := range slices.Compact(slices.Sorted(slices.Values(namespaces))) {
		var want []string
		if len(r.watched) == 0 || slices.Contains(r.watched, ns) {
			want = append(want, fleetSecretRules...)
		}
		if ns == r.leaseNamespace {
			want = append(want, `["coordination.k8s.io"] [leases] [] [create]`, `["coordination.k8s.io"] [leases] [`+r.lease+`] [get update]`)
		}
		slices.Sort(want)
		if got := a.extraRules(t, ctx, r.saNamespace, r.sa, ns); !slices.Equal(got, want) {
			t.Errorf("rules of %s/%s in namespace %s beyond any ServiceAccount's:\n  got  %s\n  want %s", r.saNamespace, r.sa, ns,
				strings.Join(got, "\n       "), strings.Join(want, "\n       "))
		}
	}
}

// checkFleetEvent records a Warning Event on a Secret as the fleet does when it refuses one, then
// counts it again with a patch.
func checkFleetEvent(t *testing.T, ctx context.Context, a *admin, sa kubernetes.Interface, ns, secret string, allowed bool) {
	t.Helper()
	now := metav1.Now()
	ev, err := sa.CoreV1().Events(ns).Create(ctx, &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: secret + "."},
		InvolvedObject: corev1.ObjectReference{APIVersion: "v1", Kind: "Secret", Namespace: ns, Name: secret},
		Reason:         "FleetClusterRefused", Message: "deploy test", Type: corev1.EventTypeWarning,
		Source: corev1.EventSource{Component: "kube-oidc-issuer"}, FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}, metav1.CreateOptions{})
	expect(t, "create an event in "+ns, allowed, err)
	if err != nil {
		return
	}
	defer func() { _ = a.cs.CoreV1().Events(ns).Delete(ctx, ev.Name, metav1.DeleteOptions{}) }()
	_, err = sa.CoreV1().Events(ns).Patch(ctx, ev.Name, types.StrategicMergePatchType, []byte(`{"count":2}`), metav1.PatchOptions{})
	expect(t, "patch an event in "+ns, true, err)
}

// extraRules returns the resource rules the ServiceAccount has in ns (SelfSubjectRulesReview made
// as it) that a ServiceAccount bound to nothing lacks, one per rule, sorted.
func (a *admin) extraRules(t *testing.T, ctx context.Context, saNamespace, sa, ns string) []string {
	t.Helper()
	rules := func(cs kubernetes.Interface) []string {
		t.Helper()
		rev, err := cs.AuthorizationV1().SelfSubjectRulesReviews().Create(ctx, &authorizationv1.SelfSubjectRulesReview{
			Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if rev.Status.Incomplete {
			t.Fatalf("incomplete rules review: %s", rev.Status.EvaluationError)
		}
		var out []string
		for _, r := range rev.Status.ResourceRules {
			out = append(out, ruleString(rbacv1.PolicyRule{APIGroups: r.APIGroups, Resources: r.Resources, ResourceNames: r.ResourceNames, Verbs: r.Verbs}))
		}
		for _, r := range rev.Status.NonResourceRules {
			out = append(out, ruleString(rbacv1.PolicyRule{NonResourceURLs: r.NonResourceURLs, Verbs: r.Verbs}))
		}
		return out
	}
	base := rules(a.impersonate(t, saNamespace, "deploy-test-bound-to-nothing"))
	var extra []string
	for _, r := range rules(a.impersonate(t, saNamespace, sa)) {
		if !slices.Contains(base, r) {
			extra = append(extra, r)
		}
	}
	slices.Sort(extra)
	return slices.Compact(extra)
}

// pruneRBAC deletes the RBAC objects carrying selector that objs does not hold, as `kubectl apply
// --prune -l selector` would: what an earlier flavour granted the same ServiceAccount must not
// mask a missing denial. It returns what it deleted.
func (a *admin) pruneRBAC(t *testing.T, ctx context.Context, objs []*unstructured.Unstructured, selector string) []string {
	t.Helper()
	var deleted []string
	for _, kind := range []struct {
		kind, resource string
		namespaced     bool
	}{{"Role", "roles", true}, {"RoleBinding", "rolebindings", true}, {"ClusterRole", "clusterroles", false}, {"ClusterRoleBinding", "clusterrolebindings", false}} {
		ri := a.dyn.Resource(schema.GroupVersionResource{Group: rbacv1.GroupName, Version: "v1", Resource: kind.resource})
		list, err := ri.List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range list.Items {
			if find(objs, kind.kind, o.GetNamespace(), o.GetName()) != nil {
				continue
			}
			if kind.namespaced {
				err = ri.Namespace(o.GetNamespace()).Delete(ctx, o.GetName(), metav1.DeleteOptions{})
			} else {
				err = ri.Delete(ctx, o.GetName(), metav1.DeleteOptions{})
			}
			if err != nil && !apierrors.IsNotFound(err) {
				t.Fatal(err)
			}
			deleted = append(deleted, kind.kind+" "+o.GetNamespace()+"/"+o.GetName())
		}
	}
	return deleted
}

// deleteObjects deletes objs of the given kinds (cleanup of cluster-wide grants).
func (a *admin) deleteObjects(t *testing.T, ctx context.Context, objs []*unstructured.Unstructured, kinds ...string) {
	t.Helper()
	for _, o := range objs {
		if !slices.Contains(kinds, o.GetKind()) {
			continue
		}
		gvk := o.GroupVersionKind()
		m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Error(err)
			continue
		}
		ri := a.dyn.Resource(m.Resource)
		if o.GetNamespace() != "" {
			err = ri.Namespace(o.GetNamespace()).Delete(ctx, o.GetName(), metav1.DeleteOptions{})
		} else {
			err = ri.Delete(ctx, o.GetName(), metav1.DeleteOptions{})
		}
		if err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
	}
}

// capiSigningSecret is the Secret Cluster API keeps a workload cluster's signing key in.
func capiSigningSecret(name, cluster string, priv, pub []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{capiClusterLabel: cluster}},
		Type:       capiSecretType,
		Data:       map[string][]byte{"tls.key": priv, "tls.crt": pub},
	}
}

// pemKID is kube-apiserver's kid of a PEM public key: base64url of SHA-256 over its PKIX DER.
func pemKID(t *testing.T, pub []byte) string {
	t.Helper()
	b, _ := pem.Decode(pub)
	if b == nil || b.Type != "PUBLIC KEY" {
		t.Fatalf("not a PUBLIC KEY PEM block")
	}
	sum := sha256.Sum256(b.Bytes)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

type fleetServeCase struct {
	namespace, deployment, sa, lease string
	// secretsNamespace is a watched namespace where the test's clusters are created.
	secretsNamespace string
	// prefix makes the cluster names of the case unique in the shared API server.
	prefix string
}

// serveFleetAsServiceAccount runs two replicas of the real binary with the rendered Deployment's
// fleet arguments, authenticated as the rendered ServiceAccount against the applied RBAC: both get
// ready, serve each cluster's documents at its own issuer URL (a cluster created while they run
// too), elect a leader, and record the refusal of a cluster whose name cannot be in a URL as a
// Warning Event on its Secret; nothing they do is forbidden.
func serveFleetAsServiceAccount(t *testing.T, ctx context.Context, a *admin, bin string, objs []*unstructured.Unstructured, c fleetServeCase) {
	t.Helper()
	noWarnings(t, "apply", a.apply(t, ctx, objs))
	a.ensureNamespace(t, ctx, c.secretsNamespace, nil)
	secrets := a.cs.CoreV1().Secrets(c.secretsNamespace)
	create := func(s *corev1.Secret) {
		t.Helper()
		_ = secrets.Delete(ctx, s.Name, metav1.DeleteOptions{}) // from an earlier run against the same API server
		if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	newKey := func() ([]byte, []byte) {
		t.Helper()
		priv, pub, err := pki.GenerateECDSAKeyPEM(elliptic.P256())
		if err != nil {
			t.Fatal(err)
		}
		return priv, pub
	}
	first, second, bad := c.prefix+"-a", c.prefix+"-b", c.prefix+".bad"
	priv, pub := newKey()
	create(capiSigningSecret(first+"-sa", first, priv, pub))
	firstKID := pemKID(t, pub)
	// Another Secret of the same cluster: labelled, but not a signing key.
	create(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: first + "-kubeconfig", Labels: map[string]string{capiClusterLabel: first}}, Type: capiSecretType, Data: map[string][]byte{"value": []byte("x")}})
	// A cluster name with a dot is no DNS-1123 label: refused, with an Event on its Secret.
	priv, pub = newKey()
	create(capiSigningSecret(bad+"-sa", bad, priv, pub))

	deployArgs := deploymentArgs(t, objs, c.namespace, c.deployment)
	dir := t.TempDir()
	kubeconfig := writeImpersonatingKubeconfig(t, dir, c.namespace, c.sa)
	type replica struct {
		public, internal string
		cmd              *exec.Cmd
		logs             *lockedBuffer
		done             chan struct{}
	}
	var replicas []*replica
	for i := range 2 {
		r := &replica{public: "127.0.0.1:" + strconv.Itoa(freePort(t)), internal: "127.0.0.1:" + strconv.Itoa(freePort(t)), logs: &lockedBuffer{}}
		args := []string{"serve", "--kubeconfig=" + kubeconfig, "--leader-elect-identity=fleet-replica-" + strconv.Itoa(i)}
		for _, arg := range deployArgs[1:] {
			switch name, _, _ := strings.Cut(arg, "="); name {
			case "--listen":
				arg = "--listen=" + r.public
			case "--internal-listen":
				arg = "--internal-listen=" + r.internal
			}
			args = append(args, arg)
		}
		r.cmd = exec.Command(bin, args...)
		r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
		r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r.done = make(chan struct{})
		go func() { _ = r.cmd.Wait(); close(r.done) }()
		replicas = append(replicas, r)
	}
	t.Cleanup(func() {
		for i, r := range replicas {
			_ = r.cmd.Process.Signal(syscall.SIGTERM)
			<-r.done
			if t.Failed() {
				t.Logf("replica %d output:\n%s", i, r.logs.String())
			}
		}
	})

	start := time.Now()
	for i, r := range replicas {
		if err := waitOK(ctx, r.done, "http://"+r.internal+"/readyz"); err != nil {
			t.Fatalf("replica %d never ready: %v\n%s", i, err, r.logs.String())
		}
	}
	t.Logf("both fleet replicas ready as the ServiceAccount in %s", time.Since(start).Round(time.Millisecond))

	// A cluster created while they run.
	priv, pub = newKey()
	create(capiSigningSecret(second+"-sa", second, priv, pub))
	secondKID := pemKID(t, pub)

	issuer := func(cluster string) string { return strings.ReplaceAll(fleetTemplate, "{cluster}", cluster) }
	for i, r := range replicas {
		for _, cl := range []struct{ name, kid string }{{first, firstKID}, {second, secondKID}} {
			path := strings.TrimPrefix(issuer(cl.name), "https://oidc.example.com")
			if err := waitBody(ctx, 30*time.Second, "http://"+r.public+path+"/openid/v1/jwks", `"kid":"`+cl.kid+`"`); err != nil {
				t.Errorf("replica %d, cluster %s: %v", i, cl.name, err)
			}
			if err := waitBody(ctx, 10*time.Second, "http://"+r.public+path+"/.well-known/openid-configuration", `"issuer":"`+issuer(cl.name)+`"`); err != nil {
				t.Errorf("replica %d, cluster %s: %v", i, cl.name, err)
			}
		}
		// The refused cluster's URL, and any other, answers 404.
		if code := statusOf(ctx, "http://"+r.public+"/clusters/"+bad+"/openid/v1/jwks"); code != http.StatusNotFound {
			t.Errorf("replica %d: refused cluster's JWKS answers %d, want 404", i, code)
		}
	}

	// The refusal, as an Event on the refused Secret (every replica records its own).
	sel := "involvedObject.name=" + bad + "-sa,reason=FleetClusterRefused"
	var events []corev1.Event
	for deadline := time.Now().Add(20 * time.Second); len(events) == 0 && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		list, err := a.cs.CoreV1().Events(c.secretsNamespace).List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			t.Fatal(err)
		}
		events = list.Items
	}
	if len(events) == 0 || events[0].Type != corev1.EventTypeWarning || !strings.Contains(events[0].Message, "DNS-1123") {
		t.Errorf("events %s in %s: %+v, want a Warning about the DNS-1123 name", sel, c.secretsNamespace, events)
	}

	// /readyz details: both clusters served, the bad one refused.
	type refusal struct {
		Secret string `json:"secret"`
		Reason string `json:"reason"`
	}
	for i, r := range replicas {
		var body struct {
			Checks struct {
				Fleet *struct {
					Ready    bool      `json:"ready"`
					Serving  int       `json:"serving"`
					Refusals []refusal `json:"refusals"`
				} `json:"fleet"`
			} `json:"checks"`
		}
		raw, err := get(ctx, "http://"+r.internal+"/readyz")
		if err == nil {
			err = json.Unmarshal(raw, &body)
		}
		f := body.Checks.Fleet
		if err != nil || f == nil || !f.Ready || f.Serving < 2 || !slices.Contains(f.Refusals, refusal{c.secretsNamespace + "/" + bad + "-sa", "bad_name"}) {
			t.Errorf("replica %d /readyz: %v %s", i, err, raw)
		}
	}

	var holder string
	for !strings.HasPrefix(holder, "fleet-replica-") && ctx.Err() == nil {
		l, err := a.cs.CoordinationV1().Leases(c.namespace).Get(ctx, c.lease, metav1.GetOptions{})
		if err == nil && l.Spec.HolderIdentity != nil {
			holder = *l.Spec.HolderIdentity
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.HasPrefix(holder, "fleet-replica-") {
		t.Errorf("Lease %s/%s holder %q", c.namespace, c.lease, holder)
	}
	for i, r := range replicas {
		if logs := r.logs.String(); strings.Contains(logs, "forbidden") || strings.Contains(logs, "could not record an Event") {
			t.Errorf("replica %d logged a forbidden request:\n%s", i, logs)
		}
	}
}

// waitBody polls url until it answers 200 with a body containing want.
func waitBody(ctx context.Context, timeout time.Duration, url, want string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		code := 0
		body, err := func() ([]byte, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return nil, err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return nil, err
			}
			defer resp.Body.Close()
			code = resp.StatusCode
			return io.ReadAll(resp.Body)
		}()
		if err == nil && code == http.StatusOK && strings.Contains(string(body), want) {
			return nil
		}
		last = fmt.Sprintf("%d %s %v", code, body, err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("GET %s: no 200 with %s (last: %s)", url, want, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func statusOf(ctx context.Context, url string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
