package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/admin"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/signingprobe"
)

// Signing-probe tests (issue 9): the issuer asks the real kube-apiserver which key it signs with.
const (
	probeSA       = "signing-probe"
	probeInterval = time.Second
	// Retention in these tests: lifetime + skew + max-age = 18 s.
	probeLifetime  = 15 * time.Second
	probeSkew      = time.Second
	probeMaxAge    = 2 * time.Second
	probeRetention = probeLifetime + probeSkew + probeMaxAge
	probeLead      = 4 * time.Second
)

// probeArgsRetaining sets the token lifetime so that the retention is retention.
func probeArgsRetaining(interval, retention time.Duration) []string {
	return []string{
		"--max-age", probeMaxAge.String(), "--max-token-lifetime", (retention - probeSkew - probeMaxAge).String(),
		"--token-clock-skew", probeSkew.String(), "--publish-lead", probeLead.String(),
		"--signing-probe-service-account", testNamespace + "/" + probeSA,
		"--signing-probe-interval", interval.String(),
	}
}

// probeStatus reads the replica's /readyz "signingProbe" details.
func (r *replica) probeStatus(ctx context.Context, t *testing.T) (int, signingprobe.Status) {
	t.Helper()
	code, body, err := fetch(ctx, http.DefaultClient, r.issuer.InternalURL+"/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Checks struct {
			SigningProbe signingprobe.Status `json:"signingProbe"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatalf("/readyz %d: %v: %s", code, err, body)
	}
	return code, d.Checks.SigningProbe
}

// waitSigning polls the probe status until the latest round saw exactly kids; it returns how long
// that took.
func (r *replica) waitSigning(ctx context.Context, t *testing.T, limit time.Duration, kids ...string) time.Duration {
	t.Helper()
	slices.Sort(kids)
	start := time.Now()
	for {
		_, st := r.probeStatus(ctx, t)
		if slices.Equal(st.Signing, kids) && st.Result == signingprobe.ResultOK {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("replica %s: probe did not see exactly %v within %s; status %+v", r.name, kids, limit, st)
		}
		time.Sleep(convergePeriod)
	}
}

func (r *replica) metric(ctx context.Context, t *testing.T, name string) float64 {
	t.Helper()
	_, body, err := fetch(ctx, http.DefaultClient, r.issuer.InternalURL+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("metric %s not in /metrics", name)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// probedReplica starts a stack whose kube-apiserver signs with a new RSA key K1, and one replica
// with the key lifecycle and a signing probe (every probeInterval, the given retention), whose
// probe has seen K1.
func probedReplica(ctx context.Context, t *testing.T, retention time.Duration) (s *stack, a *replica, k1 signingKey) {
	t.Helper()
	k1 = newRSAKey(t, 2048)
	s = newStack(t, stackOptions{signing: k1})
	if err := s.issuer.Stop(); err != nil {
		t.Fatal(err)
	}
	s.createProbeSA(ctx)
	a = startReplica(ctx, t, s, "a", true, "", lifecycleArgs(t, s, probeArgsRetaining(probeInterval, retention)...))
	a.waitSigning(ctx, t, 10*time.Second, k1.kid(t))
	return s, a, k1
}

// stageAndPromote stages a key, waits for its publish lead and promotes it.
func stageAndPromote(ctx context.Context, t *testing.T, ops *admin.Client) admin.KeyResult {
	t.Helper()
	staged, err := ops.Stage(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(*staged.Key.PromotableAt) + 100*time.Millisecond)
	promoted, err := ops.Promote(ctx, staged.Key.KID, false)
	if err != nil {
		t.Fatal(err)
	}
	return promoted
}

func (s *stack) createProbeSA(ctx context.Context) {
	s.t.Helper()
	if _, err := s.kube.CoreV1().ServiceAccounts(testNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: probeSA}}, metav1.CreateOptions{}); err != nil {
		s.t.Fatal(err)
	}
}

// TestSigningProbeKeepsUnrolledKey is issue 9's main proof: promote, and do not roll the control
// plane for longer than the retention — K1 stays published, a fresh K1 token verifies through the
// issuer, the operator is told to roll (log, Event, admin API); a replica restarted with no probe
// at all keeps K1 (the observation is persisted); the roll onto the Secret's contents is observed
// within two probe intervals, and K1 leaves the retention after that, not before; K2 stays.
func TestSigningProbeKeepsUnrolledKey(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, a, k1 := probedReplica(ctx, t, probeRetention)
	kid1 := k1.kid(t)
	if code, st := a.probeStatus(ctx, t); code != http.StatusOK || st.Fallback || !st.Running || len(st.Unpublished) != 0 {
		t.Fatalf("/readyz %d, probe %+v", code, st)
	}
	ops := a.client(t, s, adminStaticToken)
	promoted := stageAndPromote(ctx, t, ops)
	promotedAt := time.Now()
	kid2 := promoted.Key.KID
	if promoted.ControlPlane == nil || !slices.Equal(promoted.ControlPlane.KIDs, []string{kid1}) || !strings.Contains(promoted.Note, "last seen signing with "+kid1) {
		t.Fatalf("promote's answer does not say the control plane signs with K1: %+v", promoted)
	}
	load := startLoadLoop(t, s.relying, a.publicURL+"/openid/v1/jwks", kid1, 1)

	// No roll for longer than the retention: without the probe K1 would be gone after 18 s.
	time.Sleep(probeRetention + 6*time.Second)
	if kids := a.jwks(ctx, t, s); !slices.Contains(kids, kid1) || !slices.Contains(kids, kid2) {
		t.Fatalf("%s after the promote (retention %s), unrolled: JWKS %v, want K1 and K2", time.Since(promotedAt).Round(time.Second), probeRetention, kids)
	}
	fresh := s.mintToken(ctx)
	if kidOf(t, fresh) != kid1 {
		t.Fatalf("the unrolled control plane signed with %s, want K1", kidOf(t, fresh))
	}
	s.mustVerify(ctx, fresh)
	list, err := ops.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range list.Keys {
		if k.KID == kid1 && (!k.Signing || k.LastSigned == nil || time.Since(*k.LastSigned) > 15*time.Second || k.PublishUntil == nil || k.PublishUntil.Before(time.Now().Add(probeRetention-15*time.Second))) {
			t.Errorf("admin API view of K1 while it signs: %+v", k)
		}
	}
	if list.ControlPlane == nil || !slices.Equal(list.ControlPlane.KIDs, []string{kid1}) {
		t.Errorf("admin API controlPlane %+v, want K1", list.ControlPlane)
	}
	mustContain(t, a.issuer.Log(), "roll the control plane")
	evs, err := s.kube.CoreV1().Events(testNamespace).List(ctx, metav1.ListOptions{FieldSelector: "reason=ControlPlaneNotRolled"})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Items) != 1 || evs.Items[0].InvolvedObject.Name != stateSecret || !strings.Contains(evs.Items[0].Message, kid1) {
		t.Fatalf("want one ControlPlaneNotRolled Event on the state Secret naming K1, got %+v", evs.Items)
	}

	// A restart between promote and roll, with no probe at all (the worst case: a new leader that
	// cannot probe) keeps K1: its retention is persisted, counted from its last sighting.
	load.check(t)
	lastSighting := *mustLookup(t, s, kid1).lastSigned
	a.cfg.Args = replaceFlag(a.cfg.Args, "--signing-probe-interval", "0s")
	a.restart(ctx, t)
	if kids := a.jwks(ctx, t, s); !slices.Contains(kids, kid1) {
		t.Fatalf("after a restart without a probe, %s after the promote, the JWKS lost K1: %v", time.Since(promotedAt).Round(time.Second), kids)
	}
	if _, st := a.probeStatus(ctx, t); !st.Fallback || st.Running {
		t.Errorf("probe off: readyz %+v, want fallback", st)
	}
	time.Sleep(2 * time.Second) // the new leader has reconciled and pruned what it would prune
	if kids := a.jwks(ctx, t, s); !slices.Contains(kids, kid1) {
		t.Fatalf("the restarted leader pruned K1 %s after its last sighting (retention %s)", time.Since(lastSighting).Round(time.Millisecond), probeRetention)
	}
	a.cfg.Args = replaceFlag(a.cfg.Args, "--signing-probe-interval", probeInterval.String())
	a.restart(ctx, t)
	a.waitSigning(ctx, t, 10*time.Second, kid1)

	// Roll the control plane onto the Secret's contents: the switch is observed within two probe
	// intervals, and K1 stays published for the retention after that, then leaves.
	rollStart := time.Now()
	s.restartAPIServerFromSecret(ctx)
	rolled := time.Now()
	detect := a.waitSigning(ctx, t, 10*time.Second, kid2)
	t.Logf("roll → switch observed by the probe: %s (kube-apiserver ready → /readyz shows only K2; probe interval %s)", detect.Round(time.Millisecond), probeInterval)
	if detect > 2*probeInterval {
		t.Errorf("switch observed after %s, more than two probe intervals", detect)
	}
	k1rec := mustLookup(t, s, kid1)
	switchSeen := time.Now()
	checkRetainedFromSwitch(t, k1rec, probeRetention, rollStart, rolled, switchSeen)
	gone := a.waitKIDs(ctx, t, s, probeRetention+15*time.Second, "K1 gone", func(k []string) bool { return !slices.Contains(k, kid1) })
	observed := k1rec.publishUntil.Add(-probeRetention)
	t.Logf("K1 left the JWKS %s after the probe round that observed the switch (retention %s; %s after its publishUntil; last seen signing %s before that round, kube-apiserver restarting meanwhile)",
		time.Since(observed).Round(time.Millisecond), probeRetention, time.Since(*k1rec.publishUntil).Round(time.Millisecond), observed.Sub(*k1rec.lastSigned).Round(time.Millisecond))
	if time.Now().Before(*k1rec.publishUntil) {
		t.Fatalf("K1 left before its publishUntil (after %s)", gone)
	}
	if kids := a.jwks(ctx, t, s); !slices.Equal(kids, []string{kid2}) {
		t.Fatalf("JWKS after K1's retention %v, want only K2", kids)
	}
	t2 := s.mintToken(ctx)
	s.mustVerify(ctx, t2)
}

type keyTimes struct{ lastSigned, publishUntil *time.Time }

// checkRetainedFromSwitch: a key the control plane stopped signing with when it was rolled
// (kube-apiserver restarted between rollStart and rolled) is retained from the probe round that
// observed the switch (by switchSeen), not from its departure from the Secret nor from its last
// sighting (probes fail while kube-apiserver restarts: they cannot tell when it really stopped).
// With a second node serving, the switch is observed while the rolled node is still down.
func checkRetainedFromSwitch(t *testing.T, k keyTimes, retention time.Duration, rollStart, rolled, switchSeen time.Time) {
	t.Helper()
	from := k.publishUntil.Add(-retention)
	if k.lastSigned.After(rolled) || from.Before(rollStart.Add(-time.Second)) || from.After(switchSeen.Add(time.Second)) {
		t.Fatalf("retention counted from %v; want from the observed switch, between the roll's start %v and %v (last seen signing %v)", from, rollStart, switchSeen, k.lastSigned)
	}
	if from.Before(*k.lastSigned) {
		t.Fatalf("retention counted from %v, before the key was last seen signing at %v", from, k.lastSigned)
	}
}

// mustLookup reads a key's probe times from the state document.
func mustLookup(t *testing.T, s *stack, kid string) keyTimes {
	t.Helper()
	r, ok := s.readState(context.Background()).Lookup(kid)
	if !ok {
		t.Fatalf("key %s not in the state", kid)
	}
	if r.LastSigned.IsZero() {
		t.Fatalf("key %s never recorded signing", kid)
	}
	return keyTimes{lastSigned: &r.LastSigned, publishUntil: &r.PublishUntil}
}

func replaceFlag(args []string, flag, value string) []string {
	out := slices.Clone(args)
	for i := range out[:len(out)-1] {
		if out[i] == flag {
			out[i+1] = value
			return out
		}
	}
	return append(out, flag, value)
}

// TestSigningProbeSignals runs the issuer as a service account with exactly the documented RBAC
// plus create on serviceaccounts/token for the probe's ServiceAccount. A kube-apiserver restarted
// with a key in no source → unpublished is 1 and nothing published changes; restored → 0. The
// probe's RBAC removed → fallback on /readyz, in the metric and the log, serving unaffected.
func TestSigningProbeSignals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	k1, stray := newRSAKey(t, 2048), newRSAKey(t, 2048)
	kid1, strayKID := k1.kid(t), stray.kid(t)
	s := newStack(t, stackOptions{signing: k1})
	if err := s.issuer.Stop(); err != nil {
		t.Fatal(err)
	}
	s.createProbeSA(ctx)
	const issuerSA = "issuer"
	kubeconfig, _ := s.serviceAccountKubeconfig(ctx, issuerSA)
	s.grantIssuerRBAC(ctx, issuerSA)
	s.grantProbeRBAC(ctx, issuerSA, probeSA)
	a := startReplica(ctx, t, s, "a", true, kubeconfig, lifecycleArgs(t, s, probeArgsRetaining(probeInterval, probeRetention)...))
	a.waitSigning(ctx, t, 10*time.Second, kid1)
	if v := a.metric(ctx, t, "kube_oidc_issuer_signing_key_unpublished"); v != 0 {
		t.Fatalf("unpublished = %v with K1 signing and published", v)
	}
	if v := a.metric(ctx, t, fmt.Sprintf(`kube_oidc_issuer_signing_key_observed{kid=%q}`, kid1)); v != 1 {
		t.Fatalf("observed{K1} = %v", v)
	}

	s.measureProbeCost(ctx, t, a)

	before := a.jwks(ctx, t, s)
	if err := s.cluster.RestartAPIServer(ctx, func(c *testclusterConfig) {
		c.SigningKeyPEM = stray.private
		c.VerificationKeysPEM = [][]byte{k1.public}
	}); err != nil {
		t.Fatal(err)
	}
	a.waitSigning(ctx, t, 15*time.Second, strayKID)
	if v := a.metric(ctx, t, "kube_oidc_issuer_signing_key_unpublished"); v != 1 {
		t.Fatalf("unpublished = %v while the control plane signs with a key in no source", v)
	}
	if _, st := a.probeStatus(ctx, t); !slices.Equal(st.Unpublished, []string{strayKID}) {
		t.Fatalf("/readyz unpublished %v, want the stray key", st.Unpublished)
	}
	if after := a.jwks(ctx, t, s); !slices.Equal(after, before) {
		t.Fatalf("the JWKS changed when an unpublished key started signing: %v → %v", before, after)
	}
	mustContain(t, a.issuer.Log(), "the control plane signs with a key the issuer does not publish")
	if err := s.cluster.RestartAPIServer(ctx, func(c *testclusterConfig) {
		c.SigningKeyPEM = k1.private
		c.VerificationKeysPEM = nil
	}); err != nil {
		t.Fatal(err)
	}
	a.waitSigning(ctx, t, 15*time.Second, kid1)
	if v := a.metric(ctx, t, "kube_oidc_issuer_signing_key_unpublished"); v != 0 {
		t.Fatalf("unpublished = %v after the stray key stopped signing", v)
	}

	// The probe's RBAC removed: it says so and falls back; serving is unaffected.
	load := startLoadLoop(t, s.relying, a.publicURL+"/openid/v1/jwks", kid1, 1)
	if err := s.kube.RbacV1().RoleBindings(testNamespace).Delete(ctx, "kube-oidc-issuer-signing-probe", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, st := a.probeStatus(ctx, t)
		if st.Result == signingprobe.ResultForbidden {
			if code != http.StatusOK || st.Hint == "" || !strings.Contains(st.LastError, "forbidden") || !st.Fallback {
				t.Fatalf("/readyz %d with the probe forbidden: %+v", code, st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the probe did not report forbidden within 15 s: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v := a.metric(ctx, t, "kube_oidc_issuer_signing_probe_up"); v != 0 {
		t.Errorf("probe_up = %v while forbidden", v)
	}
	mustContain(t, a.issuer.Log(), "signing probe failed")
	load.check(t)
}

// grantProbeRBAC gives sa create on serviceaccounts/token for exactly probe, and create on
// Events (the roll-the-control-plane warning), as the shipped manifests do.
func (s *stack) grantProbeRBAC(ctx context.Context, sa, probe string) {
	s.t.Helper()
	rbac := s.kube.RbacV1()
	const name = "kube-oidc-issuer-signing-probe"
	if _, err := rbac.Roles(testNamespace).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"serviceaccounts/token"}, ResourceNames: []string{probe}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		},
	}, metav1.CreateOptions{}); err != nil {
		s.t.Fatal(err)
	}
	if _, err := rbac.RoleBindings(testNamespace).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: testNamespace}},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
	}, metav1.CreateOptions{}); err != nil {
		s.t.Fatal(err)
	}
}

// TestSigningProbeSeesEveryAPIServer: two kube-apiservers on one etcd behind a connection
// balancer sign with different keys (a control-plane roll in progress). The probe sees both; K1
// is retained while either signs with it, and leaves the retention after neither does.
func TestSigningProbeSeesEveryAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The rolled node takes about 20 s to stop and start again, and the switch is observed as it
	// stops (the other node answers the probes): a retention longer than that leaves K1 in the
	// state to look at after the roll.
	const retention = 40 * time.Second
	s, a, k1 := probedReplica(ctx, t, retention)
	kid1 := k1.kid(t)
	kid2 := stageAndPromote(ctx, t, a.client(t, s, adminStaticToken)).Key.KID

	// A new control-plane node comes up from the Secret (K2 signs, the bundle verifies); the old
	// node still signs with K1.
	tlsKey, tlsCrt, _, _ := s.signingSecret(ctx)
	node2, err := s.cluster.StartAPIServer(ctx, func(c *testcluster.Config) {
		c.SigningKeyPEM = tlsKey
		c.VerificationKeysPEM = [][]byte{tlsCrt}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer node2.Stop()
	lb, err := testcluster.StartBalancer(strings.TrimPrefix(s.cluster.URL(), "https://"), strings.TrimPrefix(node2.URL(), "https://"))
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	// The issuer talks to the control plane through the balancer, as it would through a cloud
	// load balancer in front of the control-plane nodes.
	a.cfg.Args = replaceFlag(a.cfg.Args, "--kubeconfig", balancedKubeconfig(t, s, lb.URL()))
	a.restart(ctx, t)
	both := a.waitSigning(ctx, t, 20*time.Second, kid1, kid2)
	t.Logf("both control-plane nodes' keys observed %s after the issuer's restart; balancer connections per node %v", both.Round(time.Millisecond), lb.Connections())
	// Every round must see both: count rounds that missed one over ten rounds.
	missed := 0
	for range 10 {
		time.Sleep(probeInterval)
		if _, st := a.probeStatus(ctx, t); !slices.Equal(st.Signing, sortedKIDs(kid1, kid2)) {
			missed++
		}
	}
	t.Logf("rounds (3 probes each) that saw only one of two nodes: %d of 10", missed)
	if missed > 0 {
		t.Errorf("%d of 10 rounds missed a node behind a round-robin balancer", missed)
	}

	// While one node signs with K1, every round pushes its retention on (test 1 shows it is
	// kept past the retention counted from the promote).
	if r := mustLookup(t, s, kid1); time.Since(*r.lastSigned) > 3*probeInterval || time.Until(*r.publishUntil) < retention-3*probeInterval {
		t.Fatalf("K1 while one node signs with it: lastSigned %v, publishUntil %v", r.lastSigned, r.publishUntil)
	}
	if kids := a.jwks(ctx, t, s); !slices.Contains(kids, kid1) {
		t.Fatalf("K1 not published while one node signs with it: %v", kids)
	}

	// The old node is rolled: it restarts from the Secret too. Neither signs with K1 now.
	rollStart := time.Now()
	s.restartAPIServerFromSecret(ctx)
	rolled := time.Now()
	a.waitSigning(ctx, t, 20*time.Second, kid2)
	t.Logf("last node rolled → only K2 observed after %s", time.Since(rolled).Round(time.Millisecond))
	r := mustLookup(t, s, kid1)
	checkRetainedFromSwitch(t, r, retention, rollStart, rolled, time.Now())
	a.waitKIDs(ctx, t, s, retention+15*time.Second, "K1 gone", func(k []string) bool { return !slices.Contains(k, kid1) })
	if time.Now().Before(*r.publishUntil) {
		t.Fatal("K1 left before its publishUntil")
	}
	if st := s.readState(ctx); phaseIn(st, kid2) != keys.PhaseActive {
		t.Fatalf("K2 is %s", phaseIn(st, kid2))
	}
}

func sortedKIDs(kids ...string) []string {
	slices.Sort(kids)
	return kids
}

// balancedKubeconfig is the admin kubeconfig with the balancer as the server.
func balancedKubeconfig(t *testing.T, s *stack, server string) string {
	t.Helper()
	kc := clientcmdv1.Config{
		APIVersion: "v1", Kind: "Config", CurrentContext: "lb",
		Clusters:  []clientcmdv1.NamedCluster{{Name: "lb", Cluster: clientcmdv1.Cluster{Server: server, CertificateAuthorityData: s.cluster.CACertPEM()}}},
		AuthInfos: []clientcmdv1.NamedAuthInfo{{Name: "admin", AuthInfo: clientcmdv1.AuthInfo{Token: s.cluster.RESTConfig().BearerToken}}},
		Contexts:  []clientcmdv1.NamedContext{{Name: "lb", Context: clientcmdv1.Context{Cluster: "lb", AuthInfo: "admin"}}},
	}
	b, err := json.Marshal(kc)
	if err != nil {
		t.Fatal(err)
	}
	path := s.dir + "/balanced.kubeconfig"
	writeFile(t, path, b)
	return path
}

// measureProbeCost logs what the probe costs kube-apiserver: its CPU over a window of probing at
// three tokens per second (180 a minute, 60 times the default rate) against the same window with
// the probe off, and the latency kube-apiserver records for the TokenRequests. It restarts the
// replica twice and leaves it probing.
func (s *stack) measureProbeCost(ctx context.Context, t *testing.T, a *replica) {
	t.Helper()
	const window = 20 * time.Second
	sample := func() (cpu, count, sum float64) {
		for _, line := range strings.Split(string(s.apiserverGet(ctx, "/metrics")), "\n") {
			name, value, ok := strings.Cut(line, " ")
			if !ok {
				continue
			}
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				continue
			}
			token := strings.Contains(name, `subresource="token"`) && strings.Contains(name, `verb="POST"`)
			switch {
			case name == "process_cpu_seconds_total":
				cpu = v
			case token && strings.HasPrefix(name, "apiserver_request_duration_seconds_count{"):
				count += v
			case token && strings.HasPrefix(name, "apiserver_request_duration_seconds_sum{"):
				sum += v
			}
		}
		return cpu, count, sum
	}
	measure := func() (cpu, count, sum float64) {
		c0, n0, s0 := sample()
		time.Sleep(window)
		c1, n1, s1 := sample()
		return c1 - c0, n1 - n0, s1 - s0
	}
	probingCPU, probes, latency := measure()
	a.cfg.Args = replaceFlag(a.cfg.Args, "--signing-probe-interval", "0s")
	a.restart(ctx, t)
	time.Sleep(3 * time.Second) // the restart's own LIST/WATCH settle
	idleCPU, idleProbes, _ := measure()
	a.cfg.Args = replaceFlag(a.cfg.Args, "--signing-probe-interval", probeInterval.String())
	a.restart(ctx, t)
	if probes == 0 || idleProbes != 0 {
		t.Fatalf("TokenRequests in the windows: %v probing, %v idle", probes, idleProbes)
	}
	perProbe := (probingCPU - idleCPU) / probes
	t.Logf("probe cost on kube-apiserver: %.0f TokenRequests in %s (%.0f/min), mean latency %.1f ms; kube-apiserver CPU %.2f s probing vs %.2f s idle → %.2f ms CPU per probe; at the default 3 probes/min: %.4f%% of one core",
		probes, window, probes/window.Minutes(), 1000*latency/probes, probingCPU, idleCPU, 1000*perProbe, 100*3*perProbe/60)
}
