package integration

import (
	"bytes"
	"context"
	"crypto/sha1" //nolint:gosec // IAM thumbprints are SHA-1
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/oidcprovider"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/leader"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage/mirror"
)

// soakRig is everything the soak test runs and measures: the stack, two replicas with leader
// election, the mirror's MinIO, IAM's moto_server, the JWKS load on both replicas, the RSS sampler
// and the figures of every phase.
type soakRig struct {
	t        *testing.T
	s        *stack
	replicas []*replica

	thumbprint string // of the intermediate: the last certificate the issuer presents
	store      *s3Store
	minio      *harness.MinIO
	iamClient  *awsiam.Client // reaches whichever moto_server runs on the fixed port

	motoMu sync.Mutex // guards moto: replaced by a restart, stopped by a cleanup
	moto   *harness.Moto

	loadMu  sync.Mutex
	loads   []*loadLoop          // every load loop ever started, for the totals
	running map[string]*loadLoop // the current loop of each replica
	active  string               // the key every JWKS answer must hold

	rss      *soakRSS
	internal *http.Client // for the internal listeners: a hung replica must not hang the test

	readyAt  time.Time // both replicas ready for the first time
	phases   []*soakPhase
	finished atomic.Bool // every phase ran
}

// soakPhase is one fault and its figures.
type soakPhase struct {
	name     string
	began    time.Time
	faultEnd time.Time // when the fault was repaired; convergence counts from here
	ended    time.Time
	before   soakCounts
	after    soakCounts
	converge time.Duration
	rssMax   map[string]int64
	notes    []string
	done     bool
}

func (p *soakPhase) note(format string, args ...any) {
	p.notes = append(p.notes, fmt.Sprintf(format, args...))
}

// soakCounts are the load loops' counters summed over replicas.
type soakCounts struct{ requests, non2xx, transport, invalid, missing int64 }

func (c soakCounts) minus(o soakCounts) soakCounts {
	return soakCounts{c.requests - o.requests, c.non2xx - o.non2xx, c.transport - o.transport, c.invalid - o.invalid, c.missing - o.missing}
}

func (c soakCounts) failures() int64 { return c.non2xx + c.transport + c.invalid + c.missing }

// soakIAMChain is a root, an intermediate and a serving certificate from it for the issuer's public
// name and 127.0.0.1 (where the tests reach each replica directly), with the IAM thumbprint: the
// SHA-1 of the intermediate, the last certificate the issuer presents.
func soakIAMChain(t *testing.T) (root *pki.CA, leaf *pki.Leaf, thumb string) {
	t.Helper()
	root, err := pki.NewCA("kube-oidc-issuer soak root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("kube-oidc-issuer soak intermediate")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err = inter.IssueServer(iamHost, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(inter.Certificate().Raw) //nolint:gosec
	return root, leaf, hex.EncodeToString(sum[:])
}

// soakRelyingClient trusts only root and reaches the issuer's public name through the CONNECT
// proxy, as a relying party on the internet would reach the real host; 127.0.0.1 (the replicas'
// own listeners, the admin API) is dialled directly.
func soakRelyingClient(root *pki.CA, proxy *url.URL) *http.Client {
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: root.Pool(), MinVersion: tls.VersionTLS12},
		Proxy: func(r *http.Request) (*url.URL, error) {
			if r.URL.Hostname() == iamHost {
				return proxy, nil
			}
			return nil, nil
		},
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// currentMoto returns the running moto_server.
func (g *soakRig) currentMoto() *harness.Moto {
	g.motoMu.Lock()
	defer g.motoMu.Unlock()
	return g.moto
}

// startLoad starts a JWKS load loop on a replica's public listener, checking every answer for the
// key active now.
func (g *soakRig) startLoad(r *replica) {
	g.loadMu.Lock()
	active := g.active
	g.loadMu.Unlock()
	l := startLoadLoop(g.t, g.s.relying, r.publicURL+documents.JWKSPath, active, soakWorkersPerReplica)
	g.loadMu.Lock()
	defer g.loadMu.Unlock()
	g.loads = append(g.loads, l)
	g.running[r.name] = l
}

// stopLoad ends a replica's load loop before the replica goes away on purpose: a relying party's
// load balancer takes a dead pod out of rotation, and its requests are not the issuer's failures.
func (g *soakRig) stopLoad(r *replica) {
	g.loadMu.Lock()
	l := g.running[r.name]
	delete(g.running, r.name)
	g.loadMu.Unlock()
	if l != nil {
		l.finish()
	}
}

// setActive switches every load loop to a new active key; call it once every replica publishes
// that key.
func (g *soakRig) setActive(kid string) {
	g.loadMu.Lock()
	defer g.loadMu.Unlock()
	g.active = kid
	for _, l := range g.running {
		l.setActive(kid)
	}
}

func (g *soakRig) activeKID() string {
	g.loadMu.Lock()
	defer g.loadMu.Unlock()
	return g.active
}

func (g *soakRig) counts() soakCounts {
	g.loadMu.Lock()
	defer g.loadMu.Unlock()
	var c soakCounts
	for _, l := range g.loads {
		c.requests += l.requests.Load()
		c.non2xx += l.non2xx.Load()
		c.transport += l.transport.Load()
		c.invalid += l.invalid.Load()
		c.missing += l.missing.Load()
	}
	return c
}

// firstLoadProblem is the first problem any load loop saw, or "".
func (g *soakRig) firstLoadProblem() string {
	g.loadMu.Lock()
	defer g.loadMu.Unlock()
	for _, l := range g.loads {
		if p := l.firstProblem.Load(); p != nil {
			return *p
		}
	}
	return ""
}

// phase runs one fault: run causes it and repairs it (setting p.faultEnd), then the rig waits until
// everything has converged again. The figures are kept even when the phase fails.
func (g *soakRig) phase(ctx context.Context, name string, run func(ctx context.Context, p *soakPhase)) {
	g.t.Helper()
	p := &soakPhase{name: name, began: time.Now(), before: g.counts()}
	g.phases = append(g.phases, p)
	g.rss.beginPhase()
	g.t.Logf("=== soak phase %s", name)
	run(ctx, p)
	if p.faultEnd.IsZero() {
		p.faultEnd = time.Now()
	}
	p.converge = g.converge(ctx, p.faultEnd, soakConvergeLimit)
	p.ended = time.Now()
	p.after = g.counts()
	p.rssMax = g.rss.phaseMax()
	p.done = true
	line := g.phaseLine(p)
	g.t.Logf("soak phase done: %s", line)
	for _, n := range p.notes {
		g.t.Logf("  %s", n)
	}
}

// soakReadyz is the part of /readyz the soak test reads.
type soakReadyz struct {
	Ready  bool `json:"ready"`
	Checks struct {
		Keys    []keys.SourceStatus `json:"keys"`
		Leader  leader.Status       `json:"leader"`
		Mirrors []mirror.Status     `json:"mirrors"`
		IAM     oidcprovider.Status `json:"iam"`
	} `json:"checks"`
}

// signingSource is the status of the signing-key Secret's key source (the other is the lifecycle
// state's), or a zero status when /readyz has none.
func (rz *soakReadyz) signingSource() keys.SourceStatus {
	for _, src := range rz.Checks.Keys {
		if src.Name == "secret/"+testNamespace+"/"+testSecret {
			return src
		}
	}
	return keys.SourceStatus{}
}

func (g *soakRig) readyz(ctx context.Context, r *replica) (int, *soakReadyz, error) {
	code, body, err := fetch(ctx, g.internal, r.issuer.InternalURL+"/readyz")
	if err != nil {
		return 0, nil, err
	}
	var rz soakReadyz
	if err := json.Unmarshal(body, &rz); err != nil {
		return code, nil, fmt.Errorf("/readyz %d: %w: %s", code, err, body)
	}
	return code, &rz, nil
}

// leader returns the replica that leads and its standby, waiting for exactly one leader.
func (g *soakRig) leader(ctx context.Context, limit time.Duration) (lead, standby *replica) {
	g.t.Helper()
	waitFor(g.t, limit, "exactly one leader", func() bool {
		var leads []int
		for i, r := range g.replicas {
			if ok, _ := r.leaderStatus(ctx); ok {
				leads = append(leads, i)
			}
		}
		if len(leads) != 1 {
			return false
		}
		lead, standby = g.replicas[leads[0]], g.replicas[1-leads[0]]
		return true
	})
	return lead, standby
}

// converge waits until everything is as it should be after a fault, with everything that counts
// having happened after since: kube-apiserver ready; both replicas ready, their key source
// healthy, serving the same valid JWKS with the active key; exactly one leader; the mirror in sync
// with objects byte-identical to the live documents, written or checked since; a successful IAM
// reconcile since, and the provider in moto with the right thumbprint and audiences; the active key
// active in the state. It returns the time from since.
func (g *soakRig) converge(ctx context.Context, since time.Time, limit time.Duration) time.Duration {
	g.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := g.converged(ctx, since)
		if err == nil {
			return time.Since(since)
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("not converged %s after the fault ended: %v", limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (g *soakRig) converged(ctx context.Context, since time.Time) error {
	if err := g.s.cluster.APIServerReady(ctx); err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	active := g.activeKID()
	var lead *soakReadyz
	var leadReplica *replica
	var served [][]byte
	for _, r := range g.replicas {
		code, rz, err := g.readyz(ctx, r)
		if err != nil {
			return fmt.Errorf("replica %s: %w", r.name, err)
		}
		if code != http.StatusOK || !rz.Ready {
			return fmt.Errorf("replica %s /readyz %d", r.name, code)
		}
		for _, src := range rz.Checks.Keys {
			if !src.Healthy {
				return fmt.Errorf("replica %s key source %s not healthy: %s", r.name, src.Name, src.LastError)
			}
		}
		if rz.Checks.Leader.Leader {
			if lead != nil {
				return errors.New("two leaders")
			}
			lead, leadReplica = rz, r
		}
		code, body, err := fetch(ctx, g.s.relying, r.publicURL+documents.JWKSPath)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("replica %s JWKS: %d %v", r.name, code, err)
		}
		kids, err := validJWKS(body)
		if err != nil || !slices.Contains(kids, active) {
			return fmt.Errorf("replica %s JWKS %v (%v), want the active key %s", r.name, kids, err, active)
		}
		served = append(served, body)
	}
	if !bytes.Equal(served[0], served[1]) {
		return fmt.Errorf("the replicas serve different JWKS:\n%s\n%s", served[0], served[1])
	}
	if lead == nil {
		return errors.New("no leader")
	}

	if len(lead.Checks.Mirrors) != 1 {
		return fmt.Errorf("leader %s reports %d mirrors", leadReplica.name, len(lead.Checks.Mirrors))
	}
	if m := lead.Checks.Mirrors[0]; !m.InSync || m.LastSuccess.Before(since) {
		return fmt.Errorf("mirror not in sync since the fault: inSync=%v lastSuccess=%s lastError=%q", m.InSync, m.LastSuccess.Format(time.RFC3339Nano), m.LastError)
	}
	for _, path := range []string{documents.JWKSPath, documents.DiscoveryPath} {
		code, live, liveHeader, err := soakGet(ctx, g.s.relying, leadReplica.publicURL+path)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("live %s: %d %v", path, code, err)
		}
		resp, obj, err := g.store.get(ctx, mirrorBucket, strings.TrimPrefix(soakIssuerPath, "/")+path)
		if err != nil {
			return fmt.Errorf("mirrored %s: %w", path, err)
		}
		if resp.StatusCode != http.StatusOK || !bytes.Equal(obj, live) {
			return fmt.Errorf("mirrored %s: %s, %d bytes, not byte-identical to the live %d bytes", path, resp.Status, len(obj), len(live))
		}
		for _, h := range []string{"Content-Type", "Cache-Control"} {
			if resp.Header.Get(h) != liveHeader.Get(h) {
				return fmt.Errorf("mirrored %s: %s %q, live %q", path, h, resp.Header.Get(h), liveHeader.Get(h))
			}
		}
	}

	if st := lead.Checks.IAM; st.LastSuccess.Before(since) {
		return fmt.Errorf("no successful IAM reconcile since the fault (last error %q)", st.LastError)
	}
	p, err := g.iamClient.GetOpenIDConnectProvider(ctx, &awsiam.GetOpenIDConnectProviderInput{OpenIDConnectProviderArn: aws.String(soakProviderARN)})
	if err != nil {
		return fmt.Errorf("IAM provider: %w", err)
	}
	if !slices.Equal(p.ThumbprintList, []string{g.thumbprint}) || !slices.Equal(p.ClientIDList, []string{iam.DefaultAudience}) {
		return fmt.Errorf("IAM provider has thumbprints %v and audiences %v, want [%s] and [%s]", p.ThumbprintList, p.ClientIDList, g.thumbprint, iam.DefaultAudience)
	}

	if ph := phaseIn(g.s.readState(ctx), active); ph != keys.PhaseActive {
		return fmt.Errorf("state has the active key %s as %s", active, ph)
	}
	return nil
}

// soakGet fetches url and returns the status, body and headers.
func soakGet(ctx context.Context, c *http.Client, url string) (int, []byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, resp.Header, err
}

// soakRSS samples the resident set of every replica each second. A replica that is down is
// skipped; its samples resume when it is tracked again.
type soakRSS struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu        sync.Mutex
	pids      map[string]int
	max       map[string]int64 // whole run, sampled VmRSS
	hwm       map[string]int64 // VmHWM (peak) of each process, at its last sample
	phase     map[string]int64
	samples   int
	overLimit []string
}

func startSoakRSS(limit int64) *soakRSS {
	r := &soakRSS{stop: make(chan struct{}), pids: map[string]int{}, max: map[string]int64{}, hwm: map[string]int64{}, phase: map[string]int64{}}
	r.wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-tick.C:
				r.sample(limit)
			}
		}
	})
	return r
}

func (r *soakRSS) track(name string, pid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pids[name] = pid
}

func (r *soakRSS) untrack(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.pids, name)
}

func (r *soakRSS) sample(limit int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, pid := range r.pids {
		rss, hwm, err := soakReadMemory(pid)
		if err != nil {
			continue // exiting or just killed
		}
		r.samples++
		r.max[name] = max(r.max[name], rss)
		r.phase[name] = max(r.phase[name], rss)
		r.hwm[name] = max(r.hwm[name], hwm)
		if rss > limit || hwm > limit {
			r.overLimit = append(r.overLimit, fmt.Sprintf("replica %s (pid %d): VmRSS %.1f MiB, VmHWM %.1f MiB", name, pid, soakMiB(rss), soakMiB(hwm)))
		}
	}
}

func (r *soakRSS) beginPhase() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.phase = map[string]int64{}
}

func (r *soakRSS) phaseMax() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.phase)
}

func (r *soakRSS) finish() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	r.wg.Wait()
}

// soakMiB converts bytes to MiB for the report.
func soakMiB(b int64) float64 { return float64(b) / (1 << 20) }

// soakReadMemory reads VmRSS and VmHWM (the peak resident set) from /proc/PID/status.
func soakReadMemory(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			hwm = kb << 10
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return rss, hwm, nil
}

// soakGarbage makes the Secret contents the garbage phase writes. Every kind but privateOnly must
// be rejected by the key source.
type soakGarbage struct {
	rng            *rand.Rand
	goodCrt        []byte
	goodKey        []byte
	weakPub        []byte // RSA 1024: well-formed, refused for its size
	weakPriv       []byte
	hugeBlockBytes int
}

// soakGarbageKind is one way of breaking the signing-key Secret.
type soakGarbageKind string

const (
	garbageTruncated   soakGarbageKind = "truncated PEM"
	garbageRandom      soakGarbageKind = "random bytes"
	garbagePrivateOnly soakGarbageKind = "private key only"
	garbageEmpty       soakGarbageKind = "empty"
	garbageWeakRSA     soakGarbageKind = "RSA 1024 (too small)"
	garbageHuge        soakGarbageKind = "huge (~950 KiB)"
)

// soakGarbageMix is the kinds in the order they are reported, with their weights out of 100.
func soakGarbageMix() []soakGarbageKind {
	return []soakGarbageKind{garbageTruncated, garbageRandom, garbagePrivateOnly, garbageEmpty, garbageWeakRSA, garbageHuge}
}

func (k soakGarbageKind) weight() int {
	switch k {
	case garbageTruncated:
		return 25
	case garbageRandom:
		return 20
	case garbagePrivateOnly:
		return 10
	case garbageEmpty, garbageWeakRSA, garbageHuge:
		return 15
	}
	return 0
}

func (g *soakGarbage) pick() soakGarbageKind {
	n := g.rng.IntN(100)
	for _, k := range soakGarbageMix() {
		if n < k.weight() {
			return k
		}
		n -= k.weight()
	}
	return garbageRandom
}

// make returns the Secret data of one kind, and whether the key source must accept it.
func (g *soakGarbage) make(kind soakGarbageKind) (data map[string][]byte, valid bool) {
	switch kind {
	case garbageTruncated:
		// Cut inside the (single) block: at least the END line is incomplete.
		cut := func(b []byte) []byte { return b[:1+g.rng.IntN(len(b)-30)] }
		return map[string][]byte{"tls.crt": cut(g.goodCrt), "tls.key": cut(g.goodKey)}, false
	case garbageRandom:
		return map[string][]byte{"tls.crt": g.random(1 + g.rng.IntN(4096)), "tls.key": g.random(1 + g.rng.IntN(4096))}, false
	case garbagePrivateOnly:
		// A valid layout: the public half of tls.key is published; the retained keys stay in
		// the JWKS through the state.
		return map[string][]byte{"tls.key": g.goodKey}, true
	case garbageEmpty:
		if g.rng.IntN(2) == 0 {
			return map[string][]byte{}, false
		}
		return map[string][]byte{"tls.crt": {}, "tls.key": {}}, false
	case garbageWeakRSA:
		return map[string][]byte{"tls.crt": g.weakPub, "tls.key": g.weakPriv}, false
	case garbageHuge:
		// A well-formed PEM block whose body is random base64: it must be read and refused
		// without the issuer's memory growing with it.
		var b bytes.Buffer
		b.WriteString("-----BEGIN PUBLIC KEY-----\n")
		raw := g.random(g.hugeBlockBytes)
		for i := 0; i < len(raw); i += 48 {
			b.WriteString(base64.StdEncoding.EncodeToString(raw[i:min(i+48, len(raw))]))
			b.WriteByte('\n')
		}
		b.WriteString("-----END PUBLIC KEY-----\n")
		return map[string][]byte{"tls.crt": b.Bytes(), "tls.key": g.goodKey}, false
	}
	return map[string][]byte{"tls.crt": g.random(64)}, false
}

func (g *soakGarbage) random(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(g.rng.Uint32())
	}
	return b
}
