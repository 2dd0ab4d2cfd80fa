package integration

import (
	"context"
	"errors"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/admin"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
)

// Shortened lifecycle timings of the rotation tests: retention = lifetime + skew + max-age.
const (
	testMaxAge      = 2 * time.Second
	testLifetime    = 45 * time.Second
	testSkew        = time.Second
	testRetention   = testLifetime + testSkew + testMaxAge
	testPublishLead = 4 * time.Second
)

func shortLifecycleArgs() []string {
	return []string{
		"--max-age", testMaxAge.String(),
		"--max-token-lifetime", testLifetime.String(),
		"--token-clock-skew", testSkew.String(),
		"--publish-lead", testPublishLead.String(),
	}
}

// TestFullRotation is the proof: T1 signed by K1 → stage K2 (published by every replica)
// → promote (refused before the publish lead) → the signing-key Secret holds K2 and the bundle K2+K1
// → kube-apiserver restarted from the Secret as an operator would → T2 signed by K2 → go-oidc
// through the issuer and kube-apiserver's own TokenReview accept T1 and T2 → a replica restarted
// during retention still publishes K1 → after retention K1 is gone from the JWKS and the bundle, T1
// is rejected and T2 accepted. All along, a load loop on the JWKS sees only valid 2xx answers that
// contain the active key.
func TestFullRotation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	k1 := newRSAKey(t, 2048)
	s := newStack(t, stackOptions{signing: k1})
	if err := s.issuer.Stop(); err != nil {
		t.Fatal(err)
	}
	args := lifecycleArgs(t, s, append(shortLifecycleArgs(), "--leader-elect",
		"--leader-elect-lease-duration", "4s", "--leader-elect-renew-deadline", "3s", "--leader-elect-retry-period", "500ms")...)
	a := startReplica(ctx, t, s, "a", true, "", args)
	b := startReplica(ctx, t, s, "b", false, "", args)
	kid1 := k1.kid(t)

	load := startLoadLoop(t, s.relying, a.publicURL+"/openid/v1/jwks", kid1, 2)

	t1 := s.mintToken(ctx)
	s.mustVerify(ctx, t1)
	if !s.tokenReview(ctx, t1) {
		t.Fatal("kube-apiserver rejects T1 before any rotation")
	}

	// Stage K2 through replica b; both replicas publish it.
	ops := b.client(t, s, adminStaticToken)
	staged := time.Now()
	res, err := ops.Stage(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	kid2 := res.Key.KID
	if res.Key.Phase != "staged" || res.Key.Algorithm != "RS256" || res.Key.PromotableAt == nil {
		t.Fatalf("stage answered %+v", res)
	}
	has := func(kid string) func([]string) bool { return func(k []string) bool { return slices.Contains(k, kid) } }
	onA := a.waitKIDs(ctx, t, s, 10*time.Second, "K2 published", has(kid2))
	onB := b.waitKIDs(ctx, t, s, 10*time.Second, "K2 published", has(kid2))
	t.Logf("stage → K2 in the JWKS (API answer to first JWKS that has it, polled every %s): replica a %s, replica b %s, %s after the request",
		convergePeriod, onA.Round(time.Millisecond), onB.Round(time.Millisecond), time.Since(staged).Round(time.Millisecond))
	if kids := a.jwks(ctx, t, s); len(kids) != 2 || kids[0] != kid1 {
		t.Fatalf("JWKS during staging %v: want the active K1 first, then K2", kids)
	}

	// Promote is refused before the publish lead, then accepted.
	if _, err := a.client(t, s, adminStaticToken).Promote(ctx, kid2, false); !admin.IsStatus(err, http.StatusConflict) {
		t.Fatalf("promote before the publish lead: %v", err)
	}
	time.Sleep(time.Until(*res.Key.PromotableAt) + 100*time.Millisecond)
	if _, err := ops.Promote(ctx, "not-a-kid", false); !admin.IsStatus(err, http.StatusNotFound) {
		t.Fatalf("promote of an unknown kid: %v", err)
	}
	promoted, err := a.client(t, s, adminStaticToken).Promote(ctx, kid2, false)
	if err != nil {
		t.Fatal(err)
	}
	promotedAt := time.Now()
	if promoted.Key.Phase != "active" {
		t.Fatalf("promote answered %+v", promoted)
	}
	load.setActive(kid2)
	_, _, active, bundle := s.signingSecret(ctx)
	if active != kid2 || !slices.Equal(bundle, []string{kid2, kid1}) {
		t.Fatalf("signing-key Secret after promote: tls.key %s, tls.crt %v; want %s and [%s %s]", active, bundle, kid2, kid2, kid1)
	}
	if _, err := ops.Remove(ctx, kid2, true); !admin.IsStatus(err, http.StatusConflict) {
		t.Fatalf("removing the active key: %v", err)
	}

	// The operator restarts kube-apiserver from the Secret; it signs with K2 and accepts both.
	s.restartAPIServerFromSecret(ctx)
	t2 := s.mintToken(ctx)
	if kidOf(t, t2) != kid2 {
		t.Fatalf("T2 signed by %s, want K2 %s", kidOf(t, t2), kid2)
	}
	s.mustVerify(ctx, t1)
	s.mustVerify(ctx, t2)
	if !s.tokenReview(ctx, t1) || !s.tokenReview(ctx, t2) {
		t.Fatal("kube-apiserver's TokenReview rejects T1 or T2 after the restart from the Secret")
	}
	list, err := ops.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var k1View admin.Key
	for _, k := range list.Keys {
		if k.KID == kid1 {
			k1View = k
		}
	}
	if k1View.Phase != "previous" || k1View.PublishUntil == nil || !k1View.InBundle {
		t.Fatalf("K1 after promote: %+v", k1View)
	}
	if d := k1View.PublishUntil.Sub(promotedAt); d < testRetention-5*time.Second || d > testRetention {
		t.Errorf("K1 publishUntil is %s after the promote, want about the retention %s", d, testRetention)
	}

	// A replica restarted during retention still publishes K1.
	b.restart(ctx, t)
	if kids := b.jwks(ctx, t, s); !slices.Contains(kids, kid1) || !slices.Contains(kids, kid2) {
		t.Fatalf("replica b after its restart publishes %v", kids)
	}
	if time.Now().After(*k1View.PublishUntil) {
		t.Fatal("the test was too slow: K1's retention ended before the checks during retention")
	}

	// After retention, K1 is pruned from the JWKS (both replicas) and from the bundle.
	limit := time.Until(*k1View.PublishUntil) + 20*time.Second
	gone := func(k []string) bool { return !slices.Contains(k, kid1) }
	a.waitKIDs(ctx, t, s, limit, "K1 pruned", gone)
	b.waitKIDs(ctx, t, s, 10*time.Second, "K1 pruned", gone)
	t.Logf("K1 left the JWKS %s after its publishUntil (retention %s)", time.Since(*k1View.PublishUntil).Round(time.Millisecond), testRetention)
	if _, _, _, bundle := s.signingSecret(ctx); !slices.Equal(bundle, []string{kid2}) {
		t.Fatalf("bundle after retention %v, want [%s]", bundle, kid2)
	}
	if _, err := s.verify(ctx, t1); err == nil {
		t.Fatal("go-oidc still accepts T1 after K1 was pruned")
	}
	s.mustVerify(ctx, t2)
	s.restartAPIServerFromSecret(ctx)
	if s.tokenReview(ctx, t1) {
		t.Fatal("kube-apiserver accepts T1 after a restart from the pruned Secret")
	}
	if !s.tokenReview(ctx, t2) {
		t.Fatal("kube-apiserver rejects T2")
	}
	load.check(t)
}

// TestDepartureRetainedAcrossRestart: an operator (or a Cluster API rollout) replaces the key in the
// signing-key Secret without keeping the old one in a bundle. The old key never leaves the JWKS: the
// state publishes it as previous, also after the issuer restarts, until its retention ends.
func TestDepartureRetainedAcrossRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	k1, k2 := newRSAKey(t, 2048), newRSAKey(t, 2048)
	kid1, kid2 := k1.kid(t), k2.kid(t)
	s := newStack(t, stackOptions{signing: k1})
	if err := s.issuer.Stop(); err != nil {
		t.Fatal(err)
	}
	args := lifecycleArgs(t, s, "--max-age", "1s", "--max-token-lifetime", "12s", "--token-clock-skew", "1s")
	a := startReplica(ctx, t, s, "a", true, "", args)
	s.waitState(ctx, 20*time.Second, "K1 recorded active", func(st *lifecycle.State) bool { return phaseIn(st, kid1) == keys.PhaseActive })

	load := startLoadLoop(t, s.relying, a.publicURL+"/openid/v1/jwks", kid1, 1)
	// The old key must be in every JWKS from now until its retention ends.
	var k1Missing, checked atomic.Int64
	stopWatch := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stopWatch:
				return
			default:
			}
			if _, body, err := fetch(ctx, s.relying, a.publicURL+"/openid/v1/jwks"); err == nil {
				checked.Add(1)
				if kids, err := validJWKS(body); err != nil || !slices.Contains(kids, kid1) {
					k1Missing.Add(1)
				}
			}
			time.Sleep(time.Millisecond)
		}
	})

	swapped := time.Now()
	s.writeSecret(ctx, map[string][]byte{"tls.crt": k2.public, "tls.key": k2.private})
	// The load loop demands the active key in every answer: switch it to K2 only once the replica
	// has seen the write (until then it rightly serves K1 alone).
	a.waitKIDs(ctx, t, s, 10*time.Second, "K2 published", func(k []string) bool { return slices.Contains(k, kid2) })
	load.setActive(kid2)
	s.waitState(ctx, 20*time.Second, "K1 recorded previous", func(st *lifecycle.State) bool {
		return phaseIn(st, kid1) == keys.PhasePrevious && phaseIn(st, kid2) == keys.PhaseActive
	})
	t.Logf("operator's Secret write → departure recorded in the state: %s", time.Since(swapped).Round(time.Millisecond))
	close(stopWatch)
	wg.Wait()
	t.Logf("%d JWKS answers checked from before the swap until the departure was recorded: %d without K1", checked.Load(), k1Missing.Load())
	if n := k1Missing.Load(); n != 0 || checked.Load() == 0 {
		t.Fatalf("%d of %d JWKS answers lacked K1 between the swap and the recorded departure", n, checked.Load())
	}

	// One replica: its restart is an outage of its own (transport errors, then 503 until its first
	// key set), so the load loop ends here.
	load.check(t)
	a.restart(ctx, t)
	if kids := a.jwks(ctx, t, s); !slices.Contains(kids, kid1) || !slices.Contains(kids, kid2) {
		t.Fatalf("after a restart during retention the JWKS has %v; only the state holds K1 now", kids)
	}
	r, _ := s.readState(ctx).Lookup(kid1)
	a.waitKIDs(ctx, t, s, time.Until(r.PublishUntil)+20*time.Second, "K1 pruned", func(k []string) bool { return !slices.Contains(k, kid1) })
	if time.Now().Before(r.PublishUntil) {
		t.Fatalf("K1 pruned before its publishUntil %s", r.PublishUntil)
	}
	if st := s.readState(ctx); phaseIn(st, kid1) != "gone" {
		t.Fatalf("K1 is %s in the state after retention", phaseIn(st, kid1))
	}
}

// TestHAReplicasAdminAuthAndTakeover: two replicas running as a service account with exactly the
// RBAC the README documents. The admin API answers 401 without a token, 403 to a service account
// without a ClusterRole, 2xx with one; every request is audited without the token. 50 concurrent
// stage requests spread over both replicas: exactly one 201, 49 × 409. The leader is killed with
// SIGKILL: the other replica takes over the background work (measured), and records a key that an
// operator swapped out of the Secret afterwards. The CLI works with kubeconfig credentials and a
// token file.
func TestHAReplicasAdminAuthAndTakeover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k1, k3 := newRSAKey(t, 2048), newRSAKey(t, 2048)
	kid1, kid3 := k1.kid(t), k3.kid(t)
	s := newStack(t, stackOptions{signing: k1})
	if err := s.issuer.Stop(); err != nil {
		t.Fatal(err)
	}
	issuerKubeconfig, _ := s.serviceAccountKubeconfig(ctx, "kube-oidc-issuer")
	s.grantIssuerRBAC(ctx, "kube-oidc-issuer")
	_, nobodyToken := s.serviceAccountKubeconfig(ctx, "nobody")
	_, rotatorToken := s.serviceAccountKubeconfig(ctx, "rotator")
	s.grantAdminAPI(ctx, "rotator", "get", "post", "delete")

	const leaseDuration = 4 * time.Second
	args := lifecycleArgs(t, s, append(shortLifecycleArgs(), "--leader-elect",
		"--leader-elect-lease-duration", leaseDuration.String(), "--leader-elect-renew-deadline", "3s", "--leader-elect-retry-period", "500ms")...)
	replicas := []*replica{
		startReplica(ctx, t, s, "a", true, issuerKubeconfig, args),
		startReplica(ctx, t, s, "b", false, issuerKubeconfig, args),
	}

	// Admin API authentication and authorization.
	a := replicas[0]
	if _, err := a.client(t, s, "").List(ctx); !admin.IsStatus(err, http.StatusUnauthorized) {
		t.Fatalf("no token: %v", err)
	}
	if _, err := a.client(t, s, "not-a-token").List(ctx); !admin.IsStatus(err, http.StatusUnauthorized) {
		t.Fatalf("a bad token: %v", err)
	}
	if _, err := a.client(t, s, nobodyToken).List(ctx); !admin.IsStatus(err, http.StatusForbidden) {
		t.Fatalf("a token without RBAC: %v", err)
	}
	if _, err := a.client(t, s, nobodyToken).Stage(ctx, ""); !admin.IsStatus(err, http.StatusForbidden) {
		t.Fatalf("a token without RBAC staging: %v", err)
	}
	if list, err := a.client(t, s, rotatorToken).List(ctx); err != nil {
		t.Fatalf("a token with RBAC: %v", err)
	} else if len(list.Keys) != 1 || list.Keys[0].KID != kid1 || list.Keys[0].Phase != "active" {
		t.Fatalf("list %+v", list)
	}
	log := a.issuer.Log()
	for _, want := range []string{
		`msg="admin request"`,
		`status=401 outcome=unauthenticated`,
		`user=system:serviceaccount:` + testNamespace + `:nobody`,
		`status=403 outcome=denied`,
		`user=system:serviceaccount:` + testNamespace + `:rotator`,
		`via=tokenreview action=list method=GET path=/admin/v1/keys status=200 outcome=ok`,
	} {
		mustContain(t, log, want)
	}
	for _, secret := range []string{nobodyToken, rotatorToken, "not-a-token"} {
		if strings.Contains(log, secret) {
			t.Fatal("a bearer token is in the issuer's log")
		}
	}

	// 50 concurrent stage requests over both replicas: exactly one key is staged.
	const n = 50
	codes := make([]int, n)
	var wg sync.WaitGroup
	began := time.Now()
	for i := range n {
		wg.Go(func() {
			_, err := replicas[i%2].client(t, s, rotatorToken).Stage(ctx, "")
			var ae *admin.APIError
			switch {
			case err == nil:
				codes[i] = http.StatusCreated
			case errors.As(err, &ae):
				codes[i] = ae.Status
			default:
				t.Errorf("stage request %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	created, conflicts := 0, 0
	for _, c := range codes {
		switch c {
		case http.StatusCreated:
			created++
		case http.StatusConflict:
			conflicts++
		}
	}
	t.Logf("%d concurrent stage requests over 2 replicas in %s: %d × 201, %d × 409", n, time.Since(began).Round(time.Millisecond), created, conflicts)
	if created != 1 || conflicts != n-1 {
		t.Fatalf("%d × 201 and %d × 409, want 1 and %d (codes %v)", created, conflicts, n-1, codes)
	}
	list, err := a.client(t, s, rotatorToken).List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Keys) != 2 {
		t.Fatalf("state after the burst: %+v", list.Keys)
	}

	// Kill the leader; the other replica takes over.
	var lead, standby *replica
	waitFor(t, 20*time.Second, "a leader", func() bool {
		for i, r := range replicas {
			if ok, _ := r.leaderStatus(ctx); ok {
				lead, standby = r, replicas[1-i]
				return true
			}
		}
		return false
	})
	if ok, _ := standby.leaderStatus(ctx); ok {
		t.Fatal("both replicas lead")
	}
	killedAt := lead.issuer.Kill()
	waitFor(t, 3*leaseDuration, "takeover", func() bool { ok, _ := standby.leaderStatus(ctx); return ok })
	takeover := time.Since(killedAt)
	t.Logf("leader %s killed (SIGKILL): %s took over the background work after %s (lease duration %s, retry period 500ms)",
		lead.name, standby.name, takeover.Round(time.Millisecond), leaseDuration)
	if takeover > leaseDuration+3*time.Second {
		t.Errorf("takeover took %s, more than the lease duration %s + 3 s", takeover, leaseDuration)
	}
	// The new leader does the background work: an operator swaps the key, it records the departure.
	swapped := time.Now()
	s.writeSecret(ctx, map[string][]byte{"tls.crt": k3.public, "tls.key": k3.private})
	s.waitState(ctx, 20*time.Second, "departure recorded by the new leader", func(st *lifecycle.State) bool {
		return phaseIn(st, kid1) == keys.PhasePrevious && phaseIn(st, kid3) == keys.PhaseActive
	})
	t.Logf("operator's Secret write → departure recorded by the new leader: %s", time.Since(swapped).Round(time.Millisecond))
	if kids := standby.jwks(ctx, t, s); !slices.Contains(kids, kid1) || !slices.Contains(kids, kid3) {
		t.Fatalf("JWKS after the swap %v", kids)
	}

	// The CLI: kubeconfig credentials (the cluster admin, authorized as system:masters) and a token
	// file (the static admin token).
	caFile := filepath.Join(s.dir, "ca.crt")
	writeFile(t, caFile, s.caPEM)
	out, err := exec.CommandContext(ctx, shared.issuerBin, "keys", "list", "--admin-url", standby.adminURL,
		"--admin-ca-file", caFile, "--kubeconfig", s.cluster.KubeconfigPath()).CombinedOutput()
	if err != nil {
		t.Fatalf("keys list: %v\n%s", err, out)
	}
	for _, want := range []string{kid1, kid3, "previous", "active", "staged", "publish lead 4s"} {
		mustContain(t, string(out), want)
	}
	tokenFile := filepath.Join(s.dir, "admin.token")
	out, err = exec.CommandContext(ctx, shared.issuerBin, "keys", "stage", "--admin-url", standby.adminURL,
		"--admin-ca-file", caFile, "--token-file", tokenFile).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "409 Conflict") || !strings.Contains(string(out), "already staged") {
		t.Fatalf("keys stage with a key already staged: %v\n%s", err, out)
	}
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestScheduledRotation: with --rotate-every, the leader stages a key when the active key is old
// enough, promotes it once it has been published for the publish lead, and the outgoing key is
// retained as previous.
func TestScheduledRotation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k1 := newRSAKey(t, 2048)
	kid1 := k1.kid(t)
	s := newStack(t, stackOptions{signing: k1})
	if err := s.issuer.Stop(); err != nil {
		t.Fatal(err)
	}
	args := lifecycleArgs(t, s, append(shortLifecycleArgs(), "--rotate-every", "8s", "--rotate-algorithm", "ES256")...)
	a := startReplica(ctx, t, s, "a", true, "", args)
	s.waitState(ctx, 20*time.Second, "K1 recorded", func(st *lifecycle.State) bool { return phaseIn(st, kid1) == keys.PhaseActive })
	recorded := time.Now()

	var kid2 string
	s.waitState(ctx, 30*time.Second, "a key staged on schedule", func(st *lifecycle.State) bool {
		r, ok := st.Staged()
		kid2 = r.KID
		return ok
	})
	t.Logf("scheduled stage %s after K1 was recorded (--rotate-every 8s)", time.Since(recorded).Round(time.Millisecond))
	a.waitKIDs(ctx, t, s, 10*time.Second, "staged key published", func(k []string) bool { return slices.Contains(k, kid2) })
	s.waitState(ctx, 30*time.Second, "scheduled promote", func(st *lifecycle.State) bool {
		return phaseIn(st, kid2) == keys.PhaseActive && phaseIn(st, kid1) == keys.PhasePrevious
	})
	r2, _ := s.readState(ctx).Lookup(kid2)
	if lead := r2.Promoted.Sub(r2.Created); lead < testPublishLead {
		t.Fatalf("promoted %s after staging, before the publish lead %s", lead, testPublishLead)
	}
	if _, _, active, bundle := s.signingSecret(ctx); active != kid2 || !slices.Contains(bundle, kid1) {
		t.Fatalf("signing-key Secret after the scheduled promote: %s %v", active, bundle)
	}
	if r2.Algorithm != "ES256" {
		t.Errorf("scheduled key algorithm %s", r2.Algorithm)
	}
}

// TestAdminTokenAudience: with --admin-token-audience the admin API accepts only tokens minted for
// that audience (TokenReview with audiences against the real kube-apiserver); a token of the same
// service account meant for the API server is refused with 401, and authorization still applies.
func TestAdminTokenAudience(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const audience = "kube-oidc-issuer-admin"
	s := newStack(t, stackOptions{signing: newRSAKey(t, 2048)})
	if err := s.issuer.Stop(); err != nil {
		t.Fatal(err)
	}
	_, rotatorAPIServerToken := s.serviceAccountKubeconfig(ctx, "rotator")
	_, nobodyAPIServerToken := s.serviceAccountKubeconfig(ctx, "nobody")
	s.grantAdminAPI(ctx, "rotator", "get")
	mint := func(sa string, audiences ...string) string { return s.serviceAccountToken(ctx, sa, audiences...) }
	a := startReplica(ctx, t, s, "a", true, "", lifecycleArgs(t, s, "--admin-token-audience", audience))

	for _, tc := range []struct {
		name  string
		token string
		want  int
	}{
		{"API server token with RBAC", rotatorAPIServerToken, http.StatusUnauthorized},
		{"token for another audience with RBAC", mint("rotator", "sts.amazonaws.com"), http.StatusUnauthorized},
		{"admin-audience token with RBAC", mint("rotator", audience), http.StatusOK},
		{"admin-audience token among others with RBAC", mint("rotator", "sts.amazonaws.com", audience), http.StatusOK},
		{"admin-audience token without RBAC", mint("nobody", audience), http.StatusForbidden},
		{"API server token without RBAC", nobodyAPIServerToken, http.StatusUnauthorized},
		{"static token file still works", adminStaticToken, http.StatusOK},
	} {
		_, err := a.client(t, s, tc.token).List(ctx)
		switch {
		case tc.want == http.StatusOK && err != nil:
			t.Errorf("%s: %v, want 200", tc.name, err)
		case tc.want != http.StatusOK && !admin.IsStatus(err, tc.want):
			t.Errorf("%s: %v, want %d", tc.name, err, tc.want)
		}
	}
}
