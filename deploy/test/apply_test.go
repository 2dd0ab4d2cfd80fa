package deploytest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

const fieldManager = "deploy-test"

// warnings collects the API server's warnings (Pod Security, deprecations) per apply.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) HandleWarningHeader(code int, agent, text string) {
	if code != 299 || text == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}

type admin struct {
	cs       kubernetes.Interface
	dyn      dynamic.Interface
	mapper   *restmapper.DeferredDiscoveryRESTMapper
	warnings *warnings
}

func newAdmin(t *testing.T) *admin {
	t.Helper()
	cfg := rest.CopyConfig(cluster.RESTConfig())
	w := &warnings{}
	cfg.WarningHandler = w
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &admin{cs: cs, dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cs.Discovery())), warnings: w}
}

// apply creates or updates every object for real (server-side apply, strict field validation:
// an unknown or misspelt field is an error), Namespaces first, then reads each one back.
// It returns the API server's warnings.
func (a *admin) apply(t *testing.T, ctx context.Context, objs []*unstructured.Unstructured) []string {
	t.Helper()
	a.warnings.take()
	ordered := slices.Clone(objs)
	slices.SortStableFunc(ordered, func(x, y *unstructured.Unstructured) int {
		return boolInt(y.GetKind() == "Namespace") - boolInt(x.GetKind() == "Namespace")
	})
	force := true
	for _, o := range ordered {
		gvk := o.GroupVersionKind()
		m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s %s: %v", gvk, o.GetName(), err)
		}
		var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
		if m.Scope.Name() == "namespace" {
			if o.GetNamespace() == "" {
				t.Fatalf("%s %s has no namespace", gvk.Kind, o.GetName())
			}
			ri = a.dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		body, err := json.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ri.Patch(ctx, o.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{
			FieldManager: fieldManager, Force: &force, FieldValidation: "Strict",
		}); err != nil {
			t.Fatalf("applying %s %s/%s: %v", gvk.Kind, o.GetNamespace(), o.GetName(), err)
		}
		got, err := ri.Get(ctx, o.GetName(), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("reading back %s %s/%s: %v", gvk.Kind, o.GetNamespace(), o.GetName(), err)
		}
		if got.GetUID() == "" {
			t.Fatalf("%s %s/%s: no uid", gvk.Kind, o.GetNamespace(), o.GetName())
		}
	}
	return a.warnings.take()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (a *admin) ensureNamespace(t *testing.T, ctx context.Context, name string, labels map[string]string) {
	t.Helper()
	_, err := a.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func (a *admin) ensureSecret(t *testing.T, ctx context.Context, ns, name string, data map[string][]byte) {
	t.Helper()
	_, err := a.cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func (a *admin) ensureServiceAccount(t *testing.T, ctx context.Context, ns, name string) {
	t.Helper()
	_, err := a.cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func find(objs []*unstructured.Unstructured, kind, ns, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetNamespace() == ns && o.GetName() == name {
			return o
		}
	}
	return nil
}

// podSecurityAdmits creates a real Pod from the Deployment's template in its namespace: the
// namespace's enforced Pod Security level admits it or the create fails. (No scheduler runs, so
// it stays Pending; it is deleted again.)
func (a *admin) podSecurityAdmits(t *testing.T, ctx context.Context, d *appsv1.Deployment) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-security-check", Namespace: d.Namespace, Labels: map[string]string{"check": "pod-security"}},
		Spec:       *d.Spec.Template.Spec.DeepCopy(),
	}
	created, err := a.cs.CoreV1().Pods(d.Namespace).Create(ctx, pod, metav1.CreateOptions{FieldValidation: "Strict"})
	if err != nil {
		t.Fatalf("a Pod from Deployment %s/%s is not admitted: %v", d.Namespace, d.Name, err)
	}
	zero := int64(0)
	if err := a.cs.CoreV1().Pods(d.Namespace).Delete(ctx, created.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
}

// checkDeployment reads the Deployment back from the API server and checks what the issue asks
// of it survived admission and defaulting.
func (a *admin) checkDeployment(t *testing.T, ctx context.Context, ns, name string, wantArgs ...string) *appsv1.Deployment {
	t.Helper()
	d, err := a.cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %v, want 2", d.Spec.Replicas)
	}
	ps := d.Spec.Template.Spec.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser != 65532 ||
		ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext = %+v", ps)
	}
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("%d containers", len(d.Spec.Template.Spec.Containers))
	}
	c := d.Spec.Template.Spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil ||
		!*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container securityContext = %+v", sc)
	}
	limit := c.Resources.Limits.Memory()
	if limit.IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("resources = %+v", c.Resources)
	}
	var memLimit string
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			memLimit = e.Value
		}
	}
	soft, err := resource.ParseQuantity(strings.TrimSuffix(memLimit, "B"))
	if err != nil || soft.Cmp(*limit) >= 0 || soft.Value() < 40<<20 {
		t.Errorf("GOMEMLIMIT %q: want at least the 40 MiB design target and below the memory limit %s (%v)", memLimit, limit, err)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for _, probe := range []struct {
		p    *corev1.Probe
		path string
	}{{c.LivenessProbe, "/healthz"}, {c.ReadinessProbe, "/readyz"}} {
		if probe.p == nil || probe.p.HTTPGet == nil || probe.p.HTTPGet.Path != probe.path || probe.p.HTTPGet.Port.StrVal != "internal" || ports["internal"] != 8081 {
			t.Errorf("probe for %s: %+v (ports %v)", probe.path, probe.p, ports)
		}
	}
	if !slices.Contains(c.Args, "--internal-listen=:8081") {
		t.Errorf("args %q: the internal listener must be on the probed port 8081", c.Args)
	}
	for _, w := range wantArgs {
		if !slices.Contains(c.Args, w) {
			t.Errorf("args %q lack %q", c.Args, w)
		}
	}
	if c.Args[0] != "serve" {
		t.Errorf("args %q: want serve first", c.Args)
	}
	aff := d.Spec.Template.Spec.Affinity
	if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 0 {
		t.Errorf("no pod anti-affinity: %+v", aff)
	}
	pdbs, err := a.cs.PolicyV1().PodDisruptionBudgets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var covered bool
	for _, p := range pdbs.Items {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		if p.Spec.MinAvailable != nil && p.Spec.MinAvailable.IntValue() == 1 && sel.Matches(labelSet(d.Spec.Template.Labels)) {
			covered = true
		}
	}
	if !covered {
		t.Errorf("no PodDisruptionBudget with minAvailable 1 selects the pods of %s/%s", ns, name)
	}
	return d
}

type labelSet map[string]string

func (l labelSet) Has(k string) bool              { _, ok := l[k]; return ok }
func (l labelSet) Get(k string) string            { return l[k] }
func (l labelSet) Lookup(k string) (string, bool) { v, ok := l[k]; return v, ok }

// checkServices: the public Service does not expose the internal port; some Service does (metrics).
func (a *admin) checkServices(t *testing.T, ctx context.Context, ns, public, metrics, adminSvc string) {
	t.Helper()
	svc, err := a.cs.CoreV1().Services(ns).Get(ctx, public, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range svc.Spec.Ports {
		if p.TargetPort.String() != "http" {
			t.Errorf("public Service %s exposes %s", public, p.TargetPort.String())
		}
	}
	m, err := a.cs.CoreV1().Services(ns).Get(ctx, metrics, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Spec.Ports) != 1 || m.Spec.Ports[0].TargetPort.String() != "internal" || m.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("metrics Service ports %+v type %s", m.Spec.Ports, m.Spec.Type)
	}
	_, err = a.cs.CoreV1().Services(ns).Get(ctx, adminSvc, metav1.GetOptions{})
	if adminSvc != "" && err != nil {
		t.Errorf("admin Service: %v", err)
	}
}

// issuerRBAC describes what the issuer's ServiceAccount must be able to do, and nothing more.
type issuerRBAC struct {
	saNamespace, sa              string
	signingNamespace, signingKey string // empty: no Secret source (key file)
	stateNamespace, state        string // empty: no key lifecycle
	leaseNamespace, lease        string
	admin                        bool // TokenReview + SubjectAccessReview
	// The signing probe's ServiceAccount (empty: the probe is off): the only one the issuer may
	// mint tokens for.
	probeNamespace, probe string
}

func (a *admin) impersonate(t *testing.T, ns, sa string) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(cluster.RESTConfig())
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + ns + ":" + sa,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// impersonateUser is a client acting as user (authenticated, no groups of its own).
func (a *admin) impersonateUser(t *testing.T, user string) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(cluster.RESTConfig())
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func expect(t *testing.T, what string, allowed bool, err error) {
	t.Helper()
	switch {
	case allowed && err != nil:
		t.Errorf("%s: want allowed, got %v", what, err)
	case !allowed && err == nil:
		t.Errorf("%s: want forbidden, but it was allowed", what)
	case !allowed && !apierrors.IsForbidden(err):
		t.Errorf("%s: want forbidden, got %v", what, err)
	}
}

// check exercises the ServiceAccount's permissions with real requests made as that ServiceAccount.
func (r issuerRBAC) check(t *testing.T, ctx context.Context, a *admin) {
	t.Helper()
	sa := a.impersonate(t, r.saNamespace, r.sa)
	// Secrets nobody granted, next to the ones that are granted.
	for _, ns := range []string{r.saNamespace, r.signingNamespace} {
		if ns == "" {
			continue
		}
		a.ensureSecret(t, ctx, ns, "unrelated", map[string][]byte{"password": []byte("hunter2")})
		_, err := sa.CoreV1().Secrets(ns).Get(ctx, "unrelated", metav1.GetOptions{})
		expect(t, "get secret "+ns+"/unrelated", false, err)
		_, err = sa.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
		expect(t, "list every secret in "+ns, false, err)
		_, err = sa.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "new"}}, metav1.CreateOptions{})
		expect(t, "create a secret in "+ns, false, err)
	}
	secretRW := func(ns, name string, update bool) {
		t.Helper()
		sec, err := sa.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		expect(t, "get secret "+ns+"/"+name, true, err)
		byName := metav1.ListOptions{FieldSelector: "metadata.name=" + name}
		_, err = sa.CoreV1().Secrets(ns).List(ctx, byName)
		expect(t, "list secret "+ns+"/"+name+" by field selector", true, err)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		w, err := sa.CoreV1().Secrets(ns).Watch(wctx, byName)
		expect(t, "watch secret "+ns+"/"+name+" by field selector", true, err)
		if err == nil {
			w.Stop()
		}
		cancel()
		if sec == nil {
			return
		}
		sec.Annotations = map[string]string{"deploy-test/touched": time.Now().Format(time.RFC3339Nano)}
		_, err = sa.CoreV1().Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{})
		expect(t, "update secret "+ns+"/"+name, update, err)
		err = sa.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		expect(t, "delete secret "+ns+"/"+name, false, err)
	}
	if r.signingKey != "" {
		a.ensureSecret(t, ctx, r.signingNamespace, r.signingKey, map[string][]byte{"tls.crt": []byte("placeholder")})
		secretRW(r.signingNamespace, r.signingKey, r.state != "") // promote writes it
	}
	if r.state != "" {
		secretRW(r.stateNamespace, r.state, true)
	} else {
		_, err := sa.CoreV1().Secrets(r.saNamespace).Get(ctx, "kube-oidc-issuer-lifecycle", metav1.GetOptions{})
		expect(t, "get a state secret without a key lifecycle", false, err)
	}

	checkLease(t, ctx, sa, r.leaseNamespace, r.lease)

	// The admin API's checks.
	_, err := sa.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: "not-a-token"}}, metav1.CreateOptions{})
	expect(t, "create tokenreview", r.admin, err)
	_, err = sa.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: "someone", NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/admin/v1/keys", Verb: "get"},
	}}, metav1.CreateOptions{})
	expect(t, "create subjectaccessreview", r.admin, err)

	r.checkSigningProbe(t, ctx, a, sa)
	r.checkEvents(t, ctx, a, sa)
}

// checkLease uses the Lease as client-go's leader election does (get, create when missing,
// update) and is refused any other Lease and the deletion of its own.
func checkLease(t *testing.T, ctx context.Context, sa kubernetes.Interface, ns, name string) {
	t.Helper()
	leases := sa.CoordinationV1().Leases(ns)
	l, err := leases.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		holder, leaseSeconds := "deploy-test", int32(1)
		l, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &leaseSeconds}}, metav1.CreateOptions{})
		expect(t, "create lease", true, err)
	} else {
		expect(t, "get lease", true, err)
	}
	if l != nil {
		now := metav1.NowMicro()
		l.Spec.RenewTime = &now
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		expect(t, "update lease", true, err)
	}
	_, err = leases.Get(ctx, name+"-other", metav1.GetOptions{})
	expect(t, "get another lease", false, err)
	err = leases.Delete(ctx, name, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
	expect(t, "delete lease", false, err)
}

// The request signingprobe.TokenRequester makes (not imported: it would pull the issuer's
// Prometheus dependency into this module).
const (
	probeAudience          = "kube-oidc-issuer.signing-probe"
	probeExpirationSeconds = 600
)

func probeToken(ctx context.Context, sa kubernetes.Interface, ns, name string) (string, error) {
	exp := int64(probeExpirationSeconds)
	tr, err := sa.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{probeAudience}, ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return tr.Status.Token, nil
}

// checkSigningProbe: the issuer gets a token, with a kid to read, for exactly the probe's
// ServiceAccount; for any other one next to it, or for itself when it is not the probe's, it is
// refused (a token is a credential: minting one for an arbitrary ServiceAccount is acting as it).
func (r issuerRBAC) checkSigningProbe(t *testing.T, ctx context.Context, a *admin, sa kubernetes.Interface) {
	t.Helper()
	if r.probe != "" {
		a.ensureServiceAccount(t, ctx, r.probeNamespace, r.probe) // the chart's own exists already
		tok, err := probeToken(ctx, sa, r.probeNamespace, r.probe)
		expect(t, "create a token for the probe's ServiceAccount "+r.probeNamespace+"/"+r.probe, true, err)
		if err == nil {
			if _, err := tokenKID(tok); err != nil {
				t.Errorf("probe token: %v", err)
			}
		}
	}
	forbidden := [][2]string{{r.saNamespace, "unrelated"}}
	if r.probeNamespace != "" && r.probeNamespace != r.saNamespace {
		forbidden = append(forbidden, [2]string{r.probeNamespace, "unrelated"})
	}
	if r.probeNamespace != r.saNamespace || r.probe != r.sa {
		forbidden = append(forbidden, [2]string{r.saNamespace, r.sa})
	}
	for _, f := range forbidden {
		a.ensureServiceAccount(t, ctx, f[0], f[1]) // refused by RBAC, not for want of the account
		_, err := probeToken(ctx, sa, f[0], f[1])
		expect(t, "create a token for ServiceAccount "+f[0]+"/"+f[1], false, err)
	}
}

// checkEvents: with a key lifecycle the leader reports on the state Secret with Events in its
// namespace, created and then counted with patches as client-go's event recorder does; without
// one there is nothing to report and no grant.
func (r issuerRBAC) checkEvents(t *testing.T, ctx context.Context, a *admin, sa kubernetes.Interface) {
	t.Helper()
	ns, secret := r.stateNamespace, r.state
	if r.state == "" {
		ns, secret = r.saNamespace, "kube-oidc-issuer-lifecycle"
	}
	now := metav1.Now()
	ev, err := sa.CoreV1().Events(ns).Create(ctx, &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: secret + "."},
		InvolvedObject: corev1.ObjectReference{APIVersion: "v1", Kind: "Secret", Namespace: ns, Name: secret},
		Reason:         "DeployTest",
		Message:        "deploy test: the issuer may report on its state Secret",
		Type:           corev1.EventTypeNormal,
		Source:         corev1.EventSource{Component: "kube-oidc-issuer"},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}, metav1.CreateOptions{})
	expect(t, "create an event in "+ns, r.state != "", err)
	if err != nil {
		return
	}
	defer func() { _ = a.cs.CoreV1().Events(ns).Delete(ctx, ev.Name, metav1.DeleteOptions{}) }()
	patch := fmt.Sprintf(`{"count":2,"lastTimestamp":%q}`, time.Now().UTC().Format(time.RFC3339))
	_, err = sa.CoreV1().Events(ns).Patch(ctx, ev.Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	expect(t, "patch event "+ns+"/"+ev.Name, true, err)
}

// tokenKID reads the kid from a token's JOSE header without verifying anything, as the signing
// probe does.
func tokenKID(token string) (string, error) {
	header, _, ok := strings.Cut(token, ".")
	if !ok {
		return "", errors.New("not a compact JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		return "", fmt.Errorf("token header: %w", err)
	}
	var h struct {
		KID string `json:"kid"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return "", fmt.Errorf("token header: %w", err)
	}
	if h.KID == "" {
		return "", errors.New("token header has no kid")
	}
	return h.KID, nil
}

// checkOperatorRoles binds the two operator ClusterRoles to users and asks the API server, with the
// SubjectAccessReviews the admin API makes, what each may do.
func (a *admin) checkOperatorRoles(t *testing.T, ctx context.Context, adminRole, viewerRole string) {
	t.Helper()
	bind := func(user, role string) {
		t.Helper()
		crb := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "deploy-test-" + user + "-" + role},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}},
		}
		if _, err := a.cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	opsUser, viewUser := "ops-"+adminRole, "view-"+viewerRole
	bind(opsUser, adminRole)
	bind(viewUser, viewerRole)
	type req struct{ verb, path string }
	all := []req{
		{"get", "/admin/v1/keys"}, {"post", "/admin/v1/keys"},
		{"post", "/admin/v1/keys/abc123/promote"}, {"delete", "/admin/v1/keys/abc123"},
	}
	for _, c := range []struct {
		user    string
		allowed []req
	}{
		{opsUser, all},
		{viewUser, all[:1]},
		{"nobody", nil},
	} {
		for _, r := range all {
			want := slices.Contains(c.allowed, r)
			// RBAC takes a moment to see new bindings.
			var got bool
			for deadline := time.Now().Add(10 * time.Second); ; {
				sar, err := a.cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
					User: c.user, Groups: []string{"system:authenticated"}, NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: r.path, Verb: r.verb},
				}}, metav1.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				got = sar.Status.Allowed
				if got == want || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if got != want {
				t.Errorf("%s %s %s: allowed=%v, want %v", c.user, strings.ToUpper(r.verb), r.path, got, want)
			}
		}
	}
}

func toTyped[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	var out T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func noWarnings(t *testing.T, what string, w []string) {
	t.Helper()
	if len(w) > 0 {
		t.Errorf("%s: the API server warned:\n  %s", what, strings.Join(w, "\n  "))
	}
}
