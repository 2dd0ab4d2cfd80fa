package integration

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/admin"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
)

// The soak test's settings. KOI_SOAK_* variables shorten them for iterating on the test itself;
// `make test-soak` runs the defaults.
const (
	soakIssuerPath = "/clusters/soak"
	// soakProviderARN is what IAM (moto) names the provider of https://iamHost/clusters/soak.
	soakProviderARN = "arn:aws:iam::" + harness.MotoAccountID + ":oidc-provider/" + iamHost + soakIssuerPath
	// soakRSSLimit is the shipped pod's memory limit; the replicas run with its GOMEMLIMIT.
	soakRSSLimit          = 64 << 20
	soakGOMEMLIMIT        = "48MiB"
	soakWorkersPerReplica = 2
	soakLeaseDuration     = 4 * time.Second
	// soakConvergeLimit bounds every convergence; the mirror's retry backoff alone may reach a
	// minute after a long S3 outage.
	soakConvergeLimit = 3 * time.Minute
	soakSteady        = 15 * time.Second
	// soakMirrorInterval makes the mirror check its objects (and report an unreachable store)
	// often enough for the phases to see it.
	soakMirrorInterval = 5 * time.Second
	// soakHugeBlock leaves the huge Secret (base64 text of this many random bytes, plus tls.key)
	// under the API server's 1 MiB limit for a Secret's data.
	soakHugeBlock = 700 << 10
)

// TestSoak is the fault and soak suite (make test-soak; skipped unless KOI_SOAK=1). Two replicas
// of the issuer run with --leader-elect, the key lifecycle, a mirror to MinIO and IAM registration
// against moto_server, behind the public name issuer.koi.test (reached through a CONNECT proxy, as
// IAM demands a URL without a port). A JWKS load loop runs on both replicas' public listeners for
// the whole run and checks every answer: 2xx, a valid JWKS, holding the key active at that moment.
// Each replica's RSS is sampled every second against the pod's 64 MiB limit. Then, one after the
// other, each followed by a convergence check (see soakRig.converge):
//
//  1. kube-apiserver restarts;
//  2. etcd stops for 30 s, then starts on the same data and ports (kube-apiserver must reconnect);
//  3. a key is staged and the leader is SIGKILLed in the middle of its promote; the standby takes
//     over, the rotation is completed, the killed replica restarts;
//  4. MinIO (the S3 endpoint) goes away and comes back: the mirror converges;
//  5. moto (the IAM endpoint) goes away and comes back empty: the provider is recreated;
//  6. the signing-key Secret is overwritten with garbage 1,000 times: the JWKS keeps the active
//     key, /readyz reports the source unhealthy, and it recovers when a good Secret is written.
//
// The figures of every phase are printed on standard output at the end, also when a phase fails.
func TestSoak(t *testing.T) {
	if os.Getenv("KOI_SOAK") != "1" {
		t.Skip("the fault and soak suite runs only with KOI_SOAK=1 (make test-soak): about 7 minutes of faults under load")
	}
	skipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	g := newSoakRig(ctx, t)

	k1 := g.activeKID()
	g.phase(ctx, "0 steady state", func(ctx context.Context, p *soakPhase) {
		p.note("initial convergence (documents mirrored, IAM provider created) %s after both replicas were ready",
			g.converge(ctx, g.readyAt, soakConvergeLimit).Round(time.Millisecond))
		time.Sleep(soakSteady)
	})
	g.phase(ctx, "1 kube-apiserver restart", g.apiServerRestart)
	g.phase(ctx, "2 etcd stopped "+soakDuration("KOI_SOAK_ETCD_OUTAGE", 30*time.Second).String(), g.etcdOutage)
	g.phase(ctx, "3 leader SIGKILL mid-promote", g.killLeaderMidPromote)
	g.phase(ctx, "4 S3 endpoint (MinIO) down", g.minioOutage)
	g.phase(ctx, "5 IAM endpoint (moto) down, back empty", g.motoOutage)
	// The previous key's retention ends during phases 4 and 5; the leader then rewrites the
	// signing-key Secret (the bundle). Garbage must not race with that write.
	g.s.waitState(ctx, testRetention+time.Minute, "the pre-rotation key pruned", func(st *lifecycle.State) bool { return phaseIn(st, k1) == "gone" })
	g.phase(ctx, "6 signing-key Secret garbage ×"+strconv.Itoa(soakInt("KOI_SOAK_GARBAGE_WRITES", 1000)), g.garbageSecret)
	g.finished.Store(true)
}

// newSoakRig starts everything the phases act on and the load and RSS sampling, and registers the
// report first so that it runs last, after everything else has stopped.
func newSoakRig(ctx context.Context, t *testing.T) *soakRig {
	t.Helper()
	began := time.Now()
	g := &soakRig{t: t, running: map[string]*loadLoop{}, internal: &http.Client{Timeout: 5 * time.Second}}
	t.Cleanup(func() { g.report(os.Stdout, time.Since(began)) })
	dir := t.TempDir()

	root, leaf, thumb := soakIAMChain(t)
	g.thumbprint = thumb
	certFile, keyFile, err := leaf.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	caFile := writePEM(t, dir, "ca.crt", root.CertPEM())

	g.store, g.minio = startMinIOStore(t, nil, nil)
	g.store.createBucket(t, mirrorBucket)
	motoPort, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	g.moto, err = harness.StartMoto(ctx, harness.MotoConfig{LogPath: filepath.Join(dir, "moto.log"), IAMClientIDs: true, Port: motoPort})
	if err != nil {
		t.Fatalf("the soak test needs moto_server (moto 5.x): %v", err)
	}
	t.Cleanup(func() {
		if err := g.currentMoto().Stop(); err != nil {
			t.Errorf("stopping moto_server: %v", err)
		}
	})
	g.iamClient = awsiam.NewFromConfig(g.moto.AWSConfig())

	ports := freePorts(t, 6) // per replica: public, internal, admin
	proxy := startIAMProxy(t, "127.0.0.1:"+strconv.Itoa(ports[0]))
	relying := soakRelyingClient(root, proxy.URL)

	k1 := newRSAKey(t, 2048)
	issuerURL := "https://" + iamHost + soakIssuerPath
	cluster, kube := startCluster(ctx, t, dir, issuerURL, k1.private, nil)
	s := &stack{t: t, dir: dir, issuerURL: issuerURL, cluster: cluster, kube: kube, relying: relying, caPEM: root.CertPEM()}
	g.s = s
	s.createNamespaceAndSA(ctx)
	s.writeSecret(ctx, map[string][]byte{"tls.crt": k1.public, "tls.key": k1.private})

	args := append([]string{
		"--issuer-url", issuerURL,
		"--secret", testNamespace + "/" + testSecret,
		"--kubeconfig", cluster.KubeconfigPath(),
		"--tls-cert-file", certFile,
		"--tls-key-file", keyFile,
	}, lifecycleArgs(t, s, shortLifecycleArgs()...)...)
	args = append(args,
		"--leader-elect", "--leader-elect-lease-duration", soakLeaseDuration.String(),
		"--leader-elect-renew-deadline", "3s", "--leader-elect-retry-period", "500ms",
		"--mirror", "s3://"+mirrorBucket, "--s3-endpoint", g.store.endpoint, "--s3-path-style", "--s3-manage-bucket-policy",
		"--mirror-interval", soakMirrorInterval.String(),
		"--iam-register", "--iam-interval", "1s", "--iam-tag", "cluster=soak",
	)
	// One set of AWS credentials serves both stores: MinIO checks them, moto accepts any. The
	// thumbprint is fetched from the public name through the proxy, trusting the test root.
	env := []string{
		"GOMEMLIMIT=" + soakGOMEMLIMIT,
		"AWS_ACCESS_KEY_ID=" + harness.MinIORootUser, "AWS_SECRET_ACCESS_KEY=" + harness.MinIORootPassword,
		"AWS_SESSION_TOKEN=", "AWS_REGION=" + harness.MotoRegion, "AWS_PROFILE=", "AWS_CA_BUNDLE=",
		"AWS_CONFIG_FILE=" + filepath.Join(dir, "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "no-aws-credentials"),
		"AWS_EC2_METADATA_DISABLED=true", "AWS_ENDPOINT_URL=", "AWS_ENDPOINT_URL_S3=",
		"AWS_ENDPOINT_URL_IAM=" + g.moto.URL, "AWS_ENDPOINT_URL_STS=" + g.moto.URL,
		"SSL_CERT_FILE=" + caFile,
		"HTTPS_PROXY=" + proxy.URL.String(), "https_proxy=" + proxy.URL.String(), "NO_PROXY=", "no_proxy=",
	}
	for i, name := range []string{"a", "b"} {
		public, internal, adminPort := ports[3*i], ports[3*i+1], ports[3*i+2]
		r := &replica{
			name:      name,
			adminPort: adminPort,
			adminURL:  "https://127.0.0.1:" + strconv.Itoa(adminPort),
			publicURL: "https://127.0.0.1:" + strconv.Itoa(public) + soakIssuerPath,
			cfg: harness.IssuerConfig{
				Binary:       shared.issuerBin,
				Args:         append(slices.Clone(args), "--admin-listen", "127.0.0.1:"+strconv.Itoa(adminPort), "--leader-elect-identity", "replica-"+name),
				Env:          env,
				PublicPort:   public,
				InternalPort: internal,
				LogPath:      filepath.Join(dir, "issuer-"+name+".log"),
			},
		}
		r.start(ctx, t)
		g.replicas = append(g.replicas, r)
	}
	g.readyAt = time.Now()
	t.Logf("stack, MinIO, moto_server and two replicas up in %s", g.readyAt.Sub(began).Round(time.Millisecond))

	g.rss = startSoakRSS(soakRSSLimit)
	t.Cleanup(g.rss.finish)
	for _, r := range g.replicas {
		g.rss.track(r.name, r.issuer.Pid())
	}
	g.active = k1.kid(t)
	for _, r := range g.replicas {
		g.startLoad(r)
	}
	return g
}

// apiServerRestart: kube-apiserver stops and starts again (same etcd, same port).
func (g *soakRig) apiServerRestart(ctx context.Context, p *soakPhase) {
	leadBefore, _ := g.leader(ctx, 30*time.Second)
	began := time.Now()
	if err := g.s.cluster.RestartAPIServer(ctx, nil); err != nil {
		g.t.Fatal(err)
	}
	p.faultEnd = time.Now()
	p.note("kube-apiserver stopped and ready again in %s", p.faultEnd.Sub(began).Round(time.Millisecond))
	leadAfter, _ := g.leader(ctx, soakConvergeLimit)
	p.note("leader before %s, after %s", leadBefore.name, leadAfter.name)
}

// etcdOutage: etcd stops; kube-apiserver keeps running without storage; the issuers keep serving
// their last keys. etcd comes back on the same data and ports, and kube-apiserver must reconnect.
func (g *soakRig) etcdOutage(ctx context.Context, p *soakPhase) {
	outage := soakDuration("KOI_SOAK_ETCD_OUTAGE", 30*time.Second)
	leadBefore, _ := g.leader(ctx, 30*time.Second)
	if err := g.s.cluster.StopEtcd(); err != nil {
		g.t.Fatal(err)
	}
	stopped := time.Now()
	var apiUnready time.Duration
	unready, unhealthy, samples, leaders := map[string]int{}, map[string]int{}, 0, map[string]int{}
	for time.Since(stopped) < outage {
		if apiUnready == 0 && g.s.cluster.APIServerReady(ctx) != nil {
			apiUnready = time.Since(stopped)
		}
		samples++
		for _, r := range g.replicas {
			code, rz, err := g.readyz(ctx, r)
			if err != nil {
				g.t.Fatalf("replica %s internal listener during the etcd outage: %v", r.name, err)
			}
			if code != http.StatusOK {
				unready[r.name]++
			}
			if !rz.signingSource().Healthy {
				unhealthy[r.name]++
			}
			if rz.Checks.Leader.Leader {
				leaders[r.name]++
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	restarted := time.Now()
	if err := g.s.cluster.StartEtcd(ctx); err != nil {
		g.t.Fatal(err)
	}
	etcdUp := time.Now()
	var reconnect time.Duration
	waitFor(g.t, 2*time.Minute, "kube-apiserver ready after etcd came back", func() bool {
		reconnect = time.Since(etcdUp)
		return g.s.cluster.APIServerReady(ctx) == nil
	})
	// Ready is not enough: a write must reach etcd through the reconnected apiserver.
	if _, err := g.s.kube.CoreV1().ConfigMaps(testNamespace).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "soak-after-etcd-outage"},
	}, metav1.CreateOptions{}); err != nil {
		g.t.Fatalf("a write after etcd came back: %v", err)
	}
	p.faultEnd = time.Now()
	leadAfter, _ := g.leader(ctx, soakConvergeLimit)
	p.note("etcd down %s; kube-apiserver unready %s after the stop; etcd up in %s; kube-apiserver ready and writing %s after etcd answered (same process: reconnected by itself)",
		restarted.Sub(stopped).Round(time.Millisecond), apiUnready.Round(time.Millisecond), etcdUp.Sub(restarted).Round(time.Millisecond), reconnect.Round(time.Millisecond))
	p.note("during the outage (%d samples, every 500ms): /readyz non-200 a=%d b=%d; key source unhealthy a=%d b=%d; leading a=%d b=%d; leader before %s, after %s",
		samples, unready["a"], unready["b"], unhealthy["a"], unhealthy["b"], leaders["a"], leaders["b"], leadBefore.name, leadAfter.name)
}

// killLeaderMidPromote stages a key, sends its promote to the leader and SIGKILLs the leader as
// soon as the promote has marked the state (the key is in flight: state written, signing-key
// Secret maybe not yet). The standby takes over; the promote is repeated until the Secret signs
// with the new key; kube-apiserver is restarted from the Secret as an operator does, and a token
// signed with the new key verifies through the issuer URL; the killed replica is restarted.
func (g *soakRig) killLeaderMidPromote(ctx context.Context, p *soakPhase) {
	t, s := g.t, g.s
	lead, standby := g.leader(ctx, 30*time.Second)
	kid1 := g.activeKID()
	ops := standby.client(t, s, adminStaticToken)
	res, err := ops.Stage(ctx, "")
	if err != nil {
		t.Fatalf("stage: %v", err)
	}
	kid2 := res.Key.KID
	for _, r := range g.replicas {
		r.waitKIDs(ctx, t, s, 10*time.Second, "staged key published", func(k []string) bool { return slices.Contains(k, kid2) })
	}
	time.Sleep(time.Until(*res.Key.PromotableAt) + 200*time.Millisecond)

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	marked := g.watchPromoteMark(watchCtx, kid2)
	g.stopLoad(lead)
	g.rss.untrack(lead.name)
	type outcome struct {
		err  error
		took time.Duration
	}
	answered := make(chan outcome, 1)
	leadOps := lead.client(t, s, adminStaticToken)
	sent := time.Now()
	go func() {
		_, err := leadOps.Promote(ctx, kid2, false)
		answered <- outcome{err, time.Since(sent)}
	}()
	var markedAfter time.Duration
	select {
	case <-marked:
		markedAfter = time.Since(sent)
	case o := <-answered:
		answered <- o // the promote finished before the mark was seen: kill anyway
	case <-time.After(10 * time.Second):
		t.Fatal("no promote mark in the state within 10s of the promote request")
	}
	killedAt := lead.issuer.Kill()
	o := <-answered
	answer := "answered OK before the kill"
	if o.err != nil {
		answer = "failed: " + o.err.Error()
	}
	p.note("promote of %s sent to leader %s; state mark seen %s later; SIGKILL %s after the request; the request %s (%s)",
		kid2, lead.name, markedAfter.Round(time.Microsecond), killedAt.Sub(sent).Round(time.Microsecond), answer, o.took.Round(time.Microsecond))

	waitFor(t, 3*soakLeaseDuration, "takeover", func() bool { ok, _ := standby.leaderStatus(ctx); return ok })
	takeover := time.Since(killedAt)
	rec, _ := s.readState(ctx).Lookup(kid2)
	_, _, secretActive, _ := s.signingSecret(ctx)
	landed := "after the Secret write (the new leader records it)"
	switch {
	case secretActive != kid2 && !rec.Promoting.IsZero():
		landed = "between the state mark and the signing-key Secret write"
	case secretActive != kid2:
		landed = "before the state mark"
	}
	p.note("the kill landed %s; %s took over %s after the kill (lease %s)", landed, standby.name, takeover.Round(time.Millisecond), soakLeaseDuration)

	// Complete the rotation: repeat the promote until the Secret signs with the new key and the
	// state has it active. A mark left by the killed leader answers 409 until it expires.
	var retries, conflicts int
	var firstConflict string
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, _, secretActive, _ = s.signingSecret(ctx)
		phase := phaseIn(s.readState(ctx), kid2)
		if secretActive == kid2 && phase == keys.PhaseActive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotation not complete 2m after the kill: Secret signs with %s, state has %s as %s", secretActive, kid2, phase)
		}
		if secretActive != kid2 && phase == keys.PhaseStaged {
			retries++
			_, err := ops.Promote(ctx, kid2, false)
			switch {
			case admin.IsStatus(err, http.StatusConflict):
				conflicts++
				if firstConflict == "" {
					firstConflict = err.Error()
				}
			case err != nil:
				t.Fatalf("promote on %s after the takeover: %v", standby.name, err)
			}
		}
		time.Sleep(time.Second)
	}
	rotated := time.Since(killedAt)
	// Both keys have been in every JWKS since the stage: switching the loops now is safe.
	g.setActive(kid2)
	if _, _, _, bundle := s.signingSecret(ctx); !slices.Equal(bundle, []string{kid2, kid1}) {
		t.Fatalf("bundle after the rotation %v, want [%s %s]", bundle, kid2, kid1)
	}
	p.note("rotation complete %s after the kill: %d promote call(s) on %s, %d answered 409 (first: %s)", rotated.Round(time.Millisecond), retries, standby.name, conflicts, firstConflict)

	// The operator's part of a rotation: kube-apiserver restarted from the Secret.
	began := time.Now()
	s.restartAPIServerFromSecret(ctx)
	apiRestart := time.Since(began)

	restart := time.Now()
	lead.cfg.LogPath = strings.TrimSuffix(lead.cfg.LogPath, ".log") + "-restarted.log"
	lead.start(ctx, t)
	g.rss.track(lead.name, lead.issuer.Pid())
	g.startLoad(lead)
	p.faultEnd = time.Now()
	p.note("killed replica %s restarted and ready in %s", lead.name, p.faultEnd.Sub(restart).Round(time.Millisecond))

	token := s.mintToken(ctx)
	if kidOf(t, token) != kid2 {
		t.Fatalf("kube-apiserver restarted from the Secret signs with %s, want %s", kidOf(t, token), kid2)
	}
	s.mustVerify(ctx, token) // go-oidc: discovery and JWKS at the issuer URL, through the proxy
	if !s.tokenReview(ctx, token) {
		t.Fatal("kube-apiserver rejects its own token after the rotation")
	}
	p.note("kube-apiserver restarted from the Secret in %s; a token it signed with %s verified through %s (go-oidc) and by TokenReview", apiRestart.Round(time.Millisecond), kid2, s.issuerURL)
}

// watchPromoteMark returns a channel closed as soon as the state Secret shows a promote of kid in
// flight (or done). It polls with GETs, which read etcd directly, rather than watching: a watch
// event may arrive after the promote has moved on to the signing-key Secret.
func (g *soakRig) watchPromoteMark(ctx context.Context, kid string) <-chan struct{} {
	secrets := g.s.kube.CoreV1().Secrets(testNamespace)
	marked := make(chan struct{})
	go func() {
		for ctx.Err() == nil {
			sec, err := secrets.Get(ctx, stateSecret, metav1.GetOptions{})
			if err != nil {
				continue
			}
			st, err := lifecycle.ParseDocument(sec.Data[lifecycle.DataKey])
			if err != nil {
				continue
			}
			if r, ok := st.Lookup(kid); ok && (!r.Promoting.IsZero() || r.Phase == keys.PhaseActive) {
				close(marked)
				return
			}
		}
	}()
	return marked
}

// minioOutage: the S3 endpoint goes away. The issuer keeps serving and stays ready, the leader
// reports the failing mirror; MinIO comes back on the same port and data and the mirror converges.
func (g *soakRig) minioOutage(ctx context.Context, p *soakPhase) {
	outage := soakDuration("KOI_SOAK_ENDPOINT_OUTAGE", 30*time.Second)
	if err := g.minio.Stop(); err != nil {
		g.t.Fatal(err)
	}
	stopped := time.Now()
	maxFailures, notReady := 0, 0
	var lastErr string
	for time.Since(stopped) < outage {
		lead, _ := g.leader(ctx, 30*time.Second)
		code, rz, err := g.readyz(ctx, lead)
		if err != nil {
			g.t.Fatal(err)
		}
		if code != http.StatusOK {
			notReady++
		}
		if len(rz.Checks.Mirrors) == 1 && rz.Checks.Mirrors[0].ConsecutiveFailures > maxFailures {
			maxFailures, lastErr = rz.Checks.Mirrors[0].ConsecutiveFailures, rz.Checks.Mirrors[0].LastError
		}
		time.Sleep(500 * time.Millisecond)
	}
	if maxFailures == 0 {
		g.t.Errorf("the leader reported no mirror failure during a %s S3 outage", outage)
	}
	if notReady > 0 {
		g.t.Errorf("/readyz of the leader answered non-200 %d times while only the mirror failed", notReady)
	}
	began := time.Now()
	if err := g.minio.Start(ctx); err != nil {
		g.t.Fatal(err)
	}
	p.faultEnd = time.Now()
	p.note("MinIO down %s: the leader reported up to %d consecutive mirror failures (last: %s); /readyz non-200: %d; MinIO back in %s",
		began.Sub(stopped).Round(time.Millisecond), maxFailures, soakClip(lastErr, 160), notReady, p.faultEnd.Sub(began).Round(time.Millisecond))
}

// motoOutage: the IAM endpoint goes away: the leader reports registration errors. moto comes back
// on the same port with no state at all; the leader's IAM loop must recreate the provider.
func (g *soakRig) motoOutage(ctx context.Context, p *soakPhase) {
	outage := soakDuration("KOI_SOAK_ENDPOINT_OUTAGE", 30*time.Second)
	first, _ := g.leader(ctx, 30*time.Second)
	_, rz, err := g.readyz(ctx, first)
	if err != nil {
		g.t.Fatal(err)
	}
	errorsBefore := rz.Checks.IAM.Errors // a new leader's loop counts from zero
	if err := g.currentMoto().Stop(); err != nil {
		g.t.Fatal(err)
	}
	stopped := time.Now()
	var errs uint64
	var lastErr string
	notReady := 0
	for time.Since(stopped) < outage {
		lead, _ := g.leader(ctx, 30*time.Second)
		code, rz, err := g.readyz(ctx, lead)
		if err != nil {
			g.t.Fatal(err)
		}
		if code != http.StatusOK {
			notReady++
		}
		if rz.Checks.IAM.LastError != "" {
			lastErr = rz.Checks.IAM.LastError
		}
		n := rz.Checks.IAM.Errors
		if lead == first {
			n -= min(errorsBefore, n)
		}
		errs = max(errs, n)
		time.Sleep(500 * time.Millisecond)
	}
	if lastErr == "" {
		g.t.Errorf("the leader reported no IAM error during a %s IAM outage", outage)
	}
	began := time.Now()
	next, err := g.currentMoto().Restart(ctx)
	if err != nil {
		g.t.Fatal(err)
	}
	g.motoMu.Lock()
	g.moto = next
	g.motoMu.Unlock()
	p.faultEnd = time.Now()
	var recreated time.Duration
	waitFor(g.t, soakConvergeLimit, "the IAM provider recreated in the new moto_server", func() bool {
		_, err := g.iamClient.GetOpenIDConnectProvider(ctx, &awsiam.GetOpenIDConnectProviderInput{OpenIDConnectProviderArn: ptr(soakProviderARN)})
		recreated = time.Since(p.faultEnd)
		return err == nil
	})
	p.note("moto_server down %s: the leader counted %d failed reconciles (last: %s); /readyz non-200: %d; moto back (empty) in %s; provider recreated %s after",
		began.Sub(stopped).Round(time.Millisecond), errs, soakClip(lastErr, 160), notReady, p.faultEnd.Sub(began).Round(time.Millisecond), recreated.Round(time.Millisecond))
}

// garbageSecret overwrites the signing-key Secret with garbage (soakGarbage) as fast as the API
// server takes it, while /readyz is sampled. The issuers must keep serving the same JWKS, report
// the source unhealthy, not record the active key as departed, and recover once a good Secret is
// written back.
func (g *soakRig) garbageSecret(ctx context.Context, p *soakPhase) {
	t, s := g.t, g.s
	writes := soakInt("KOI_SOAK_GARBAGE_WRITES", 1000)
	good, err := s.kube.CoreV1().Secrets(testNamespace).Get(ctx, testSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	jwksBefore := g.replicas[0].jwksBody(ctx, t, s)
	pids := map[string]int{}
	for _, r := range g.replicas {
		pids[r.name] = r.issuer.Pid()
	}
	weakPriv, weakPub, err := pki.GenerateRSAKeyPEM(1024)
	if err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	gen := &soakGarbage{rng: rand.New(rand.NewPCG(seed, 13)), goodCrt: good.Data["tls.crt"], goodKey: good.Data["tls.key"],
		weakPub: weakPub, weakPriv: weakPriv, hugeBlockBytes: soakHugeBlock}

	// /readyz sampler: every 100 ms, both replicas.
	var samples, unhealthy, notReady atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			for _, r := range g.replicas {
				code, rz, err := g.readyz(ctx, r)
				if err != nil {
					continue
				}
				samples.Add(1)
				if code != http.StatusOK {
					notReady.Add(1)
				}
				if !rz.signingSource().Healthy {
					unhealthy.Add(1)
				}
			}
		}
	}()

	kinds := map[soakGarbageKind]int{}
	var bytesWritten int64
	began := time.Now()
	for i := range writes {
		kind := gen.pick()
		if i == writes-1 {
			kind = garbageRandom // end on a Secret that must be refused, to check /readyz says so
		}
		data, _ := gen.make(kind)
		s.writeSecret(ctx, data)
		kinds[kind]++
		for _, v := range data {
			bytesWritten += int64(len(v))
		}
	}
	wrote := time.Since(began)
	var reported time.Duration
	waitFor(t, 30*time.Second, "both replicas report the key source unhealthy", func() bool {
		reported = time.Since(began.Add(wrote))
		for _, r := range g.replicas {
			_, rz, err := g.readyz(ctx, r)
			if err != nil || rz.signingSource().Name == "" || rz.signingSource().Healthy {
				return false
			}
		}
		return true
	})
	var sourceErrors []string
	for _, r := range g.replicas {
		_, rz, err := g.readyz(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		sourceErrors = append(sourceErrors, fmt.Sprintf("%s=%d", r.name, rz.signingSource().Errors))
	}

	restored := time.Now()
	s.writeSecret(ctx, good.Data)
	var recovered time.Duration
	waitFor(t, 30*time.Second, "both replicas report the key source healthy again", func() bool {
		recovered = time.Since(restored)
		for _, r := range g.replicas {
			_, rz, err := g.readyz(ctx, r)
			if err != nil || !rz.signingSource().Healthy {
				return false
			}
		}
		return true
	})
	p.faultEnd = time.Now()
	close(stop)
	<-sampled

	for _, r := range g.replicas {
		if r.issuer.Pid() != pids[r.name] {
			t.Errorf("replica %s was restarted during the garbage writes", r.name)
		}
		if _, _, err := soakReadMemory(pids[r.name]); err != nil {
			t.Errorf("replica %s (pid %d) is gone: %v", r.name, pids[r.name], err)
		}
		if after := r.jwksBody(ctx, t, s); string(after) != string(jwksBefore) {
			t.Errorf("replica %s serves another JWKS after the garbage:\n%s\nbefore:\n%s", r.name, after, jwksBefore)
		}
	}
	if ph := phaseIn(s.readState(ctx), g.activeKID()); ph != keys.PhaseActive {
		t.Errorf("the active key is %s in the state after the garbage", ph)
	}

	var mix []string
	for _, k := range soakGarbageMix() {
		mix = append(mix, fmt.Sprintf("%s %d", k, kinds[k]))
	}
	p.note("%d writes (%.1f MiB of Secret data, seed %d) in %s (%.0f writes/s): %s",
		writes, soakMiB(bytesWritten), seed, wrote.Round(time.Millisecond), float64(writes)/wrote.Seconds(), strings.Join(mix, ", "))
	p.note("/readyz sampled %d times (both replicas, every 100 ms): source unhealthy %d, non-200 %d; after the last (garbage) write both report it unhealthy (checked within %s); source errors counted %s",
		samples.Load(), unhealthy.Load(), notReady.Load(), reported.Round(time.Millisecond), strings.Join(sourceErrors, " "))
	p.note("good Secret written back: both sources healthy %s later; JWKS byte-identical to before; same processes (no crash)", recovered.Round(time.Millisecond))
}

// jwksBody returns the replica's JWKS bytes, failing on anything but 200.
func (r *replica) jwksBody(ctx context.Context, t *testing.T, s *stack) []byte {
	t.Helper()
	code, body, err := fetch(ctx, s.relying, r.publicURL+documents.JWKSPath)
	if err != nil || code != http.StatusOK {
		t.Fatalf("replica %s JWKS: %d %v", r.name, code, err)
	}
	return body
}

// phaseLine is one row of the report.
func (g *soakRig) phaseLine(p *soakPhase) string {
	after, end := p.after, p.ended
	if !p.done {
		after, end = g.counts(), time.Now()
	}
	d := after.minus(p.before)
	conv := "FAILED"
	if p.done {
		conv = p.converge.Round(time.Millisecond).String()
	}
	rss := "-"
	if p.rssMax != nil {
		rss = fmt.Sprintf("%.1f / %.1f", soakMiB(p.rssMax["a"]), soakMiB(p.rssMax["b"]))
	}
	return fmt.Sprintf("%-44s %9s %9d %7d %9d %7d %9d %10s %13s",
		p.name, end.Sub(p.began).Round(100*time.Millisecond), d.requests, d.non2xx, d.transport, d.invalid, d.missing, conv, rss)
}

// report prints the figures of every phase that ran, and the totals.
func (g *soakRig) report(w io.Writer, took time.Duration) {
	if g.rss != nil {
		g.rss.finish()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n==== kube-oidc-issuer soak: figures ====\n")
	fmt.Fprintf(&b, "2 replicas (--leader-elect, lease %s), GOMEMLIMIT=%s, RSS bound %d MiB, JWKS load %d workers per replica (race detector in the issuer: %v)\n",
		soakLeaseDuration, soakGOMEMLIMIT, soakRSSLimit>>20, soakWorkersPerReplica, raceEnabled)
	fmt.Fprintf(&b, "%-44s %9s %9s %7s %9s %7s %9s %10s %13s\n", "phase", "took", "requests", "non-2xx", "transport", "invalid", "no-active", "converge", "RSS MiB a / b")
	for _, p := range g.phases {
		fmt.Fprintln(&b, g.phaseLine(p))
		for _, n := range p.notes {
			fmt.Fprintf(&b, "    %s\n", n)
		}
	}
	total := g.counts()
	fmt.Fprintf(&b, "%-44s %9s %9d %7d %9d %7d %9d\n", "total", took.Round(100*time.Millisecond), total.requests, total.non2xx, total.transport, total.invalid, total.missing)
	if g.rss != nil {
		g.rss.mu.Lock()
		fmt.Fprintf(&b, "RSS (%d samples, 1/s): max VmRSS a %.1f MiB, b %.1f MiB; max VmHWM a %.1f MiB, b %.1f MiB; over %d MiB: %d\n",
			g.rss.samples, soakMiB(g.rss.max["a"]), soakMiB(g.rss.max["b"]), soakMiB(g.rss.hwm["a"]), soakMiB(g.rss.hwm["b"]), soakRSSLimit>>20, len(g.rss.overLimit))
		over := slices.Clone(g.rss.overLimit)
		g.rss.mu.Unlock()
		if len(over) > 0 && !raceEnabled {
			g.t.Errorf("RSS above the %d MiB bound (%d samples); first: %s", soakRSSLimit>>20, len(over), over[0])
		}
	}
	if total.failures() > 0 {
		first := g.firstLoadProblem()
		fmt.Fprintf(&b, "load failures: %d; first: %s\n", total.failures(), soakClip(first, 300))
		g.t.Errorf("the JWKS load saw %d failures; first: %s", total.failures(), first)
	}
	result := "PASS"
	if g.t.Failed() || !g.finished.Load() {
		result = "FAIL"
	}
	fmt.Fprintf(&b, "soak result: %s\n", result)
	_, _ = io.WriteString(w, b.String())
}

func soakClip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// soakDuration and soakInt read a KOI_SOAK_* override, for iterating on the test itself.
func soakDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

func soakInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
