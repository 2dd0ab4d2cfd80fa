package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

const (
	// issuerURL is what the issuer publishes; the listeners are on 127.0.0.1 whatever it says. In
	// the plain run it stands for the public name of a TLS-terminating ingress in front of it.
	issuerURL = "https://oidc.bench.example"
	namespace = "bench"
	// clusterAPISecretType is the type Cluster API gives <cluster>-sa.
	clusterAPISecretType corev1.SecretType = "cluster.x-k8s.io/secret"

	// propagationPoll is how often the served JWKS is fetched while waiting for a new kid.
	propagationPoll = 5 * time.Millisecond
	// propagationTimeout bounds the wait for one Secret change; the target is 250 ms.
	propagationTimeout = 10 * time.Second
	// settle lets the issuer return to steady state after the change it has just served.
	settle = 50 * time.Millisecond
)

// secretNames are the two watched Secrets; the second one is rotated to time propagation.
var secretNames = [2]string{"a-sa", "b-sa"}

// signingKey is a generated RSA key in the Cluster API layout, with the kid kube-apiserver gives it.
type signingKey struct {
	pub, priv []byte
	kid       string
}

func newSigningKey() (signingKey, error) {
	priv, pub, err := pki.GenerateRSAKeyPEM(2048)
	if err != nil {
		return signingKey{}, err
	}
	parsed, err := keys.ParsePEM("generated key", pub)
	if err != nil || len(parsed) != 1 {
		return signingKey{}, fmt.Errorf("parsing a generated key: %v", err)
	}
	return signingKey{pub: pub, priv: priv, kid: parsed[0].KeyID()}, nil
}

// shellQuote quotes s for sh: inside single quotes only the single quote itself is special.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func (k signingKey) secretData() map[string][]byte {
	return map[string][]byte{"tls.crt": k.pub, "tls.key": k.priv}
}

// bench is the state shared by the plain and the TLS run: the cluster, the Secrets, the binaries.
type bench struct {
	o       options
	cluster *testcluster.Cluster
	secrets corev1client.SecretInterface
	wrk     *wrkRunner

	// issuerLauncher is what harness.StartIssuer executes: the issuer binary, or a script that
	// execs it pinned, so that it runs pinned from its first instruction like the baseline.
	issuerLauncher string
	initialKIDs    []string
	rotation       []signingKey

	// rotated counts the rotation keys put into the second Secret so far.
	rotated int

	ca              *pki.CA
	tlsCert, tlsKey string
	serverEnv       []string
}

func setUp(ctx context.Context, o options, logger *slog.Logger) (*bench, error) {
	b := &bench{o: o, issuerLauncher: o.issuerBin}
	b.serverEnv = []string{"GOMAXPROCS=" + strconv.Itoa(o.gomaxprocs)}
	clientCPUs := ""
	if o.pin {
		clientCPUs = o.clientCPUs
		b.issuerLauncher = filepath.Join(o.workDir, "pinned-kube-oidc-issuer")
		// serverCPUs passed parseCPUList: digits, commas and dashes only.
		script := fmt.Sprintf("#!/bin/sh\nexec taskset -c %s %s \"$@\"\n", o.serverCPUs, shellQuote(o.issuerBin))
		if err := os.WriteFile(b.issuerLauncher, []byte(script), 0o755); err != nil {
			return nil, err
		}
	}
	var err error
	if b.wrk, err = newWrkRunner(o.wrkBin, o.threads, o.connections, clientCPUs, o.serverCPUList, o.clientCPUList, o.workDir); err != nil {
		return nil, err
	}

	progress("kube-apiserver and etcd (hack/build-test-binaries.sh; built on first use, ~4 min)")
	binDir, err := testcluster.BinDir(ctx, os.Stderr)
	if err != nil {
		return nil, err
	}

	progress("generating %d RSA-2048 keys", 2+o.propagationSamples)
	initial := make([]signingKey, len(secretNames))
	for i := range initial {
		if initial[i], err = newSigningKey(); err != nil {
			return nil, err
		}
		b.initialKIDs = append(b.initialKIDs, initial[i].kid)
	}
	for range o.propagationSamples {
		k, err := newSigningKey()
		if err != nil {
			return nil, err
		}
		b.rotation = append(b.rotation, k)
	}
	if o.tls {
		if err := b.writeServingCert(); err != nil {
			return nil, err
		}
	}

	progress("starting etcd and kube-apiserver on 127.0.0.1")
	b.cluster, err = testcluster.Start(ctx, testcluster.Config{
		BinDir:                binDir,
		WorkDir:               filepath.Join(o.workDir, "cluster"),
		ServiceAccountIssuers: []string{issuerURL},
		SigningKeyPEM:         initial[0].priv,
		Logger:                logger,
	})
	if err != nil {
		return b, err
	}
	core, err := corev1client.NewForConfig(b.cluster.RESTConfig())
	if err != nil {
		return b, err
	}
	if _, err := core.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		return b, fmt.Errorf("creating namespace %s: %w", namespace, err)
	}
	b.secrets = core.Secrets(namespace)
	for i, name := range secretNames {
		if _, err := b.secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Type:       clusterAPISecretType,
			Data:       initial[i].secretData(),
		}, metav1.CreateOptions{}); err != nil {
			return b, fmt.Errorf("creating Secret %s/%s: %w", namespace, name, err)
		}
	}
	return b, nil
}

func (b *bench) writeServingCert() error {
	ca, err := pki.NewCA("kube-oidc-issuer bench CA")
	if err != nil {
		return err
	}
	leaf, err := ca.IssueServer("127.0.0.1", "localhost")
	if err != nil {
		return err
	}
	dir := filepath.Join(b.o.workDir, "tls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b.ca = ca
	b.tlsCert, b.tlsKey, err = leaf.WriteFiles(dir)
	return err
}

func (b *bench) tearDown() {
	if b.cluster != nil {
		if err := b.cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "bench-serve: stopping the test cluster:", err)
		}
	}
}

// modeResult is everything measured for one transport (plain HTTP or TLS).
type modeResult struct {
	tls    bool
	pinned bool
	rounds []roundResult
	// The issuer's memory: samples under load (all measured runs and the propagation phase), and
	// one sample a second after the load stopped (with the kernel's lifetime peak, VmHWM).
	loadMem   []procMemory
	idleMem   procMemory
	issuerGC  gcFigures
	heapAfter metricsSnapshot
	// propagation holds the Secret change → new kid served times (plain run only).
	propagation []time.Duration
}

type roundResult struct {
	issuerFirst      bool
	issuer, baseline wrkResult
	attempts         int
}

// disturbance is the larger share of CPU time other processes took during either run.
func (r roundResult) disturbance() float64 { return max(r.issuer.cpu.others, r.baseline.cpu.others) }

func (r roundResult) ratio() float64 { return r.issuer.reqPerSec() / r.baseline.reqPerSec() }

// cpuRatio compares CPU time per request; like ratio, above 1 means the issuer is cheaper.
func (r roundResult) cpuRatio() float64 {
	return float64(r.baseline.cpuPerRequest()) / float64(r.issuer.cpuPerRequest())
}

// gcFigures are the issuer's allocation and GC counts over its measured runs (from /metrics).
type gcFigures struct {
	requests, cycles, allocBytes, mallocs float64
	seconds                               float64
}

func (g *gcFigures) add(before, after metricsSnapshot, d time.Duration) {
	g.requests += after.JWKS200 - before.JWKS200
	g.cycles += after.GCCycles - before.GCCycles
	g.allocBytes += after.AllocBytes - before.AllocBytes
	g.mallocs += after.Mallocs - before.Mallocs
	g.seconds += d.Seconds()
}

// servers are the issuer and the baseline as one run sees them.
type servers struct {
	issuer                 *harness.Issuer
	baseline               *child
	issuerURL, baselineURL string // of the JWKS
	metricsURL             string
	client                 *http.Client
}

func (s *servers) stop() {
	if s.baseline != nil {
		s.baseline.stop()
	}
	if s.issuer != nil {
		if err := s.issuer.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "bench-serve: stopping kube-oidc-issuer:", err)
		}
	}
}

func (b *bench) runMode(ctx context.Context, useTLS bool) (*modeResult, error) {
	mode := "plain HTTP"
	if useTLS {
		mode = "TLS"
	}
	s, err := b.startServers(ctx, useTLS)
	if s != nil {
		defer s.stop()
	}
	if err != nil {
		return nil, err
	}
	res := &modeResult{tls: useTLS, pinned: b.o.pin}
	pid := s.issuer.Pid()

	if b.o.warmup > 0 {
		progress("%s: warm-up, %s each", mode, b.o.warmup)
		for _, t := range []struct {
			label, url string
			pid        int
		}{{"warmup-issuer", s.issuerURL, pid}, {"warmup-baseline", s.baselineURL, s.baseline.pid()}} {
			if _, err := b.wrk.run(ctx, t.label, t.url, t.pid, b.o.warmup); err != nil {
				return nil, err
			}
		}
	}

	for r := range b.o.rounds {
		// Alternating the order cancels a slow drift of the machine's speed between the two. A
		// pair disturbed by other processes is measured again, a bounded number of times, and
		// the least disturbed attempt is kept: noise that hits only one side of a pair skews
		// the ratio more than anything either server does.
		var best roundResult
		for attempt := 0; attempt <= b.o.retries; attempt++ {
			rr, err := b.runRound(ctx, s, res, mode, r, attempt)
			if err != nil {
				return nil, err
			}
			rr.attempts = attempt + 1
			if attempt == 0 || rr.disturbance() < best.disturbance() {
				best = rr
			}
			best.attempts = rr.attempts
			if rr.disturbance() <= quietThreshold {
				break
			}
			if attempt < b.o.retries {
				progress("%s: round %d disturbed (other processes took %s of a CPU it ran on); measuring it again",
					mode, r+1, pct(rr.disturbance()))
			}
		}
		res.rounds = append(res.rounds, best)
	}

	if !useTLS {
		progress("plain HTTP: timing %d Secret changes until the new kid is served, issuer under load", len(b.rotation))
		d, samples, err := b.measurePropagation(ctx, s, pid)
		if err != nil {
			return nil, err
		}
		res.propagation = d
		res.loadMem = append(res.loadMem, samples...)
	}

	// The resident set a second after the load stopped: what an idle issuer keeps.
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(time.Second):
	}
	if res.idleMem, err = readProcMemory(pid); err != nil {
		return nil, err
	}
	if res.heapAfter, err = scrapeMetrics(ctx, s.client, s.metricsURL); err != nil {
		return nil, err
	}
	return res, nil
}

// runRound loads the issuer and the baseline once each, in the round's order. The issuer's RSS
// samples and GC figures go into res whether or not the round is kept: they are valid either way.
func (b *bench) runRound(ctx context.Context, s *servers, res *modeResult, mode string, r, attempt int) (roundResult, error) {
	rr := roundResult{issuerFirst: r%2 == 0}
	label := fmt.Sprintf("round%d", r+1)
	if attempt > 0 {
		label += fmt.Sprintf("-retry%d", attempt)
	}
	for _, issuerTurn := range []bool{rr.issuerFirst, !rr.issuerFirst} {
		if err := waitQuiet(ctx, b.o.quietWait); err != nil {
			return rr, err
		}
		var err error
		if !issuerTurn {
			progress("%s: round %d/%d: baseline, %s", mode, r+1, b.o.rounds, b.o.duration)
			if rr.baseline, err = b.wrk.run(ctx, label+"-baseline", s.baselineURL, s.baseline.pid(), b.o.duration); err != nil {
				return rr, err
			}
			continue
		}
		progress("%s: round %d/%d: issuer, %s", mode, r+1, b.o.rounds, b.o.duration)
		before, err := scrapeMetrics(ctx, s.client, s.metricsURL)
		if err != nil {
			return rr, err
		}
		sampler := sampleRSS(s.issuer.Pid())
		rr.issuer, err = b.wrk.run(ctx, label+"-issuer", s.issuerURL, s.issuer.Pid(), b.o.duration)
		samples, serr := sampler.finish()
		if err != nil {
			return rr, err
		}
		if serr != nil {
			return rr, fmt.Errorf("sampling the issuer's RSS: %w", serr)
		}
		res.loadMem = append(res.loadMem, samples...)
		after, err := scrapeMetrics(ctx, s.client, s.metricsURL)
		if err != nil {
			return rr, err
		}
		res.issuerGC.add(before, after, time.Duration(rr.issuer.DurationUS)*time.Microsecond)
	}
	return rr, nil
}

// startServers starts the issuer watching both Secrets and, once it serves, the baseline with the
// JWKS bytes and header values the issuer sends.
func (b *bench) startServers(ctx context.Context, useTLS bool) (*servers, error) {
	mode, scheme := "plain HTTP", "http"
	if useTLS {
		mode, scheme = "TLS", "https"
	}
	ports := make([]int, 3)
	for i := range ports {
		p, err := harness.FreePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	args := []string{
		"--issuer-url", issuerURL,
		"--secret", namespace + "/" + secretNames[0],
		"--secret", namespace + "/" + secretNames[1],
		"--kubeconfig", b.cluster.KubeconfigPath(),
	}
	if useTLS {
		args = append(args, "--tls-cert-file", b.tlsCert, "--tls-key-file", b.tlsKey)
	}
	name := "issuer-plain"
	if useTLS {
		name = "issuer-tls"
	}

	progress("%s: starting kube-oidc-issuer serve (GOMAXPROCS=%d%s)", mode, b.o.gomaxprocs, pinnedTo(b.o))
	s := &servers{client: &http.Client{Timeout: 5 * time.Second}}
	if useTLS {
		c, err := harness.HTTPClient(b.ca.CertPEM())
		if err != nil {
			return nil, err
		}
		s.client = c
	}
	issuer, err := harness.StartIssuer(ctx, harness.IssuerConfig{
		Binary:       b.issuerLauncher,
		Args:         args,
		Env:          append(slices.Clone(b.serverEnv), b.o.issuerEnv...),
		PublicPort:   ports[0],
		InternalPort: ports[1],
		LogPath:      filepath.Join(b.o.workDir, name+".log"),
	})
	if err != nil {
		return nil, err
	}
	s.issuer = issuer
	if err := issuer.WaitReady(ctx, time.Minute); err != nil {
		return s, err
	}
	s.issuerURL = scheme + "://" + issuer.PublicAddr + documents.JWKSPath
	s.metricsURL = issuer.InternalURL + "/metrics"

	resp, body, err := waitHTTP(ctx, s.client, s.issuerURL, 10*time.Second, func() bool { return true })
	if err != nil {
		return s, err
	}
	kids, err := jwksKIDs(body)
	if err != nil {
		return s, err
	}
	for _, want := range b.currentKIDs() {
		if !slices.Contains(kids, want) {
			return s, fmt.Errorf("the issuer's JWKS has kids %v, want %v", kids, b.currentKIDs())
		}
	}

	bodyFile := filepath.Join(b.o.workDir, "jwks-"+name+".json")
	if err := os.WriteFile(bodyFile, body, 0o644); err != nil {
		return s, err
	}
	baselineArgs := []string{
		"-listen", "127.0.0.1:" + strconv.Itoa(ports[2]),
		"-body", bodyFile,
		"-etag", resp.Header.Get("Etag"),
		"-cache-control", resp.Header.Get("Cache-Control"),
	}
	if useTLS {
		baselineArgs = append(baselineArgs, "-tls-cert-file", b.tlsCert, "-tls-key-file", b.tlsKey)
	}
	baselineArgs = append(baselineArgs, b.o.baselineArgs...)
	bin := b.o.baselineBin
	if b.o.pin {
		baselineArgs = append([]string{"-c", b.o.serverCPUs, bin}, baselineArgs...)
		bin = "taskset"
	}
	progress("%s: starting the baseline with the issuer's %d JWKS bytes", mode, len(body))
	if s.baseline, err = startChild(bin, baselineArgs, b.serverEnv, filepath.Join(b.o.workDir, "baseline-"+name+".log")); err != nil {
		return s, err
	}
	s.baselineURL = scheme + "://127.0.0.1:" + strconv.Itoa(ports[2]) + documents.JWKSPath
	_, baseBody, err := waitHTTP(ctx, s.client, s.baselineURL, 10*time.Second, func() bool { return !s.baseline.exited() })
	if err != nil {
		return s, err
	}
	if !bytes.Equal(baseBody, body) {
		return s, errors.New("the baseline does not serve the issuer's JWKS bytes")
	}
	return s, nil
}

// currentKIDs are the kids both Secrets hold now: the second one moves on with every rotation.
func (b *bench) currentKIDs() []string {
	kids := slices.Clone(b.initialKIDs)
	if b.rotated > 0 {
		kids[1] = b.rotation[b.rotated-1].kid
	}
	return kids
}

func pinnedTo(o options) string {
	if !o.pin {
		return ", not pinned"
	}
	return ", pinned to CPU " + o.serverCPUs
}

func jwksKIDs(body []byte) ([]string, error) {
	var doc struct {
		Keys []struct {
			KID string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("parsing the served JWKS: %w", err)
	}
	kids := make([]string, len(doc.Keys))
	for i, k := range doc.Keys {
		kids[i] = k.KID
	}
	return kids, nil
}

// measurePropagation replaces the second Secret's key with a new one, one sample at a time, and
// times each change from the Update request until a fetch of the JWKS carries the new kid. wrk
// keeps the issuer under load meanwhile, so the figure includes a busy server; the poll itself
// queues behind wrk's connections like any relying party would.
func (b *bench) measurePropagation(ctx context.Context, s *servers, pid int) ([]time.Duration, []procMemory, error) {
	// wrk runs until cancelled; its duration only bounds it should this function hang.
	loadFor := time.Duration(len(b.rotation))*(propagationTimeout+time.Second) + 10*time.Second
	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan error, 1)
	go func() {
		_, err := b.wrk.run(loadCtx, "propagation-load", s.issuerURL, pid, loadFor)
		loadDone <- err
	}()
	defer func() {
		stopLoad()
		<-loadDone
	}()
	select { // let wrk open its connections
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	case err := <-loadDone:
		return nil, nil, fmt.Errorf("load during propagation: %w", err)
	case <-time.After(500 * time.Millisecond):
	}

	sampler := sampleRSS(pid)
	var took []time.Duration
	for i, k := range b.rotation {
		sec, err := b.secrets.Get(ctx, secretNames[1], metav1.GetOptions{})
		if err != nil {
			sampler.finish()
			return nil, nil, err
		}
		sec.Data = k.secretData()
		start := time.Now()
		if _, err := b.secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
			sampler.finish()
			return nil, nil, fmt.Errorf("updating Secret %s/%s: %w", namespace, secretNames[1], err)
		}
		b.rotated = i + 1
		d, err := waitForKID(ctx, s.client, s.issuerURL, k.kid, start)
		if err != nil {
			sampler.finish()
			return nil, nil, fmt.Errorf("change %d: %w", i+1, err)
		}
		took = append(took, d)
		select {
		case err := <-loadDone:
			sampler.finish()
			return nil, nil, fmt.Errorf("load during propagation ended early: %v", err)
		case <-time.After(settle):
		}
	}
	samples, err := sampler.finish()
	return took, samples, err
}

// waitForKID fetches the JWKS every propagationPoll until it carries kid and returns the time
// since start at which that response was read.
func waitForKID(ctx context.Context, client *http.Client, url, kid string, start time.Time) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, propagationTimeout)
	defer cancel()
	tick := time.NewTicker(propagationPoll)
	defer tick.Stop()
	for {
		_, body, err := getOnce(ctx, client, url)
		if err == nil {
			kids, err := jwksKIDs(body)
			if err != nil {
				return 0, err
			}
			if slices.Contains(kids, kid) {
				return time.Since(start), nil
			}
		} else if ctx.Err() == nil {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("kid %s not served %s after the Secret change", kid, propagationTimeout)
		case <-tick.C:
		}
	}
}

func getOnce(ctx context.Context, client *http.Client, url string) (*http.Response, []byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	return resp, buf.Bytes(), nil
}
