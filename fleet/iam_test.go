package fleet

import (
	"context"
	"crypto/sha1" //nolint:gosec // IAM thumbprints are SHA-1
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/iam/types"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/thumbprint"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
)

// iamTestHost is the issuers' host in these tests. AWS refuses a port in a provider URL, so the
// host is reached as iamTestHost:443 through a CONNECT proxy (harness.ConnectProxy) routing it to a
// TLS server on 127.0.0.1: the HTTPS_PROXY path a deployment takes, as in integration/iam_test.go.
const iamTestHost = "oidc.fleet.test"

// iamTestChain is a root, an intermediate and a server certificate for iamTestHost.
type iamTestChain struct {
	root       *pki.CA
	cert       tls.Certificate
	thumbprint string // SHA-1 of the intermediate: the last certificate the server presents
}

func newIAMTestChain(t *testing.T, name string) *iamTestChain {
	t.Helper()
	root, err := pki.NewCA(name + " root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate(name + " intermediate")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := inter.IssueServer(iamTestHost)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := leaf.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(inter.Certificate().Raw) //nolint:gosec
	return &iamTestChain{root: root, cert: cert, thumbprint: hex.EncodeToString(sum[:])}
}

// iamTestHostServer is a TLS server on 127.0.0.1 standing for the fleet's host: its chain can be
// swapped (a CA change), and it counts TLS handshakes, i.e. thumbprint fetches.
type iamTestHostServer struct {
	chain      atomic.Pointer[iamTestChain]
	handshakes atomic.Int64
	proxy      *harness.ConnectProxy
	fetcher    *thumbprint.Fetcher
}

func startIAMTestHost(t *testing.T, chains ...*iamTestChain) *iamTestHostServer {
	t.Helper()
	s := &iamTestHostServer{}
	s.chain.Store(chains[0])
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		s.handshakes.Add(1)
		return &s.chain.Load().cert, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	s.proxy, err = harness.StartConnectProxy(map[string]string{iamTestHost + ":443": ln.Addr().String()}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.proxy.Close() })
	roots := x509.NewCertPool()
	for _, c := range chains {
		roots.AddCert(c.root.Certificate())
	}
	s.fetcher = &thumbprint.Fetcher{Proxy: http.ProxyURL(s.proxy.URL), RootCAs: roots}
	return s
}

// connects counts the CONNECTs the proxy tunnelled to the host.
func (s *iamTestHostServer) connects() int {
	n := 0
	for _, a := range s.proxy.Asked() {
		if a == "CONNECT "+iamTestHost+":443" {
			n++
		}
	}
	return n
}

func startIAMTestMoto(t *testing.T) *awsiam.Client {
	t.Helper()
	// IAMClientIDs: the audience actions moto 5.2.1 lacks. A missing moto_server fails the test
	// with what to install.
	m := harness.StartMotoT(t, harness.MotoConfig{IAMClientIDs: true})
	return awsiam.NewFromConfig(m.AWSConfig())
}

// iamTestProvider is a provider as moto reports it, read with the SDK apart from the code under
// test.
type iamTestProvider struct {
	URL         string
	Audiences   []string
	Thumbprints []string
	Tags        map[string]string
}

func iamARNOf(issuerURL string) string {
	return iam.ProviderARN("aws", harness.MotoAccountID, issuerURL)
}

func getIAMTestProvider(t *testing.T, c *awsiam.Client, issuerURL string) (*iamTestProvider, bool) {
	t.Helper()
	out, err := c.GetOpenIDConnectProvider(context.Background(), &awsiam.GetOpenIDConnectProviderInput{OpenIDConnectProviderArn: aws.String(iamARNOf(issuerURL))})
	if err != nil {
		if strings.Contains(err.Error(), "NoSuchEntity") {
			return nil, false
		}
		t.Fatalf("GetOpenIDConnectProvider %s: %v", issuerURL, err)
	}
	p := &iamTestProvider{URL: aws.ToString(out.Url), Audiences: out.ClientIDList, Thumbprints: out.ThumbprintList, Tags: map[string]string{}}
	for _, tag := range out.Tags {
		p.Tags[aws.ToString(tag.Key)] = aws.ToString(tag.Value)
	}
	return p, true
}

func listIAMTestProviders(t *testing.T, c *awsiam.Client) []string {
	t.Helper()
	out, err := c.ListOpenIDConnectProviders(context.Background(), &awsiam.ListOpenIDConnectProvidersInput{})
	if err != nil {
		t.Fatal(err)
	}
	var arns []string
	for _, e := range out.OpenIDConnectProviderList {
		arns = append(arns, aws.ToString(e.Arn))
	}
	slices.Sort(arns)
	return arns
}

// createIAMTestProvider creates a provider behind the fleet's back.
func createIAMTestProvider(t *testing.T, c *awsiam.Client, issuerURL string, auds []string, tags map[string]string) {
	t.Helper()
	var tl []types.Tag
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		tl = append(tl, types.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
	}
	if _, err := c.CreateOpenIDConnectProvider(context.Background(), &awsiam.CreateOpenIDConnectProviderInput{
		Url: aws.String(issuerURL), ClientIDList: auds, ThumbprintList: []string{strings.Repeat("0", 40)}, Tags: tl,
	}); err != nil {
		t.Fatal(err)
	}
}

// runIAM runs p until the test ends.
func runIAM(t *testing.T, p *IAMProviders) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("IAMProviders.Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("IAMProviders.Run did not return within 10s of its context ending")
		}
	})
}

func waitIAM(t *testing.T, p *IAMProviders, what string, cond func(IAMStatus) bool) IAMStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := p.Status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; status %+v", what, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIAMProvidersWithMoto registers the providers of several clusters in moto_server, with the
// thumbprint fetched from a real TLS server through a proxy:
//   - nothing is called before Run (not the leader); the first publish of each cluster registers
//     it: URL, audiences, thumbprint, the user's tags and the fleet's managed-by and cluster tags;
//   - a provider found in place is kept up to date but not tagged as the fleet's;
//   - a cluster whose provider URL IAM refuses (too long) and one whose provider IAM refuses to
//     update (audience quota) fail, are retried, and hold up no other cluster;
//   - the host is dialled once for every cluster, then once per interval (a CA change reaches every
//     provider);
//   - Removed deletes only the provider the fleet created for that cluster.
func TestIAMProvidersWithMoto(t *testing.T) {
	client := startIAMTestMoto(t)
	ca1, ca2 := newIAMTestChain(t, "ca-1"), newIAMTestChain(t, "ca-2")
	host := startIAMTestHost(t, ca1, ca2)

	// A long path segment leaves room for a cluster whose URL IAM refuses (over 255 characters)
	// while the template's sample rendering, and short names, pass.
	segment := "clusters-" + strings.Repeat("x", 130)
	tmpl, err := ParseURLTemplate("https://" + iamTestHost + "/" + segment + "/{namespace}/{cluster}")
	if err != nil {
		t.Fatal(err)
	}
	clusters := map[string]ClusterRef{
		"alpha":   {"team-a", "alpha"},                                      // registered, later removed: deleted
		"beta":    {"team-b", "beta"},                                       // registered, kept
		"found":   {"team-a", "found"},                                      // a provider was there already: never deleted
		"other":   {"team-a", "other"},                                      // a fleet's provider, tagged for another cluster
		"quota":   {"team-a", "quota"},                                      // IAM refuses another audience
		"toolong": {strings.Repeat("n", 63), "c" + strings.Repeat("l", 62)}, // IAM refuses the URL
	}
	urls := map[string]string{}
	for name, c := range clusters {
		urls[name], err = tmpl.Expand(c.Namespace, c.Name)
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(urls["toolong"]) <= iam.MaxURLLength || len(urls["alpha"]) > iam.MaxURLLength {
		t.Fatalf("URL lengths %d and %d: the test needs one over %d and one under", len(urls["toolong"]), len(urls["alpha"]), iam.MaxURLLength)
	}

	auds := []string{iam.DefaultAudience, "vault.example.com"}
	createIAMTestProvider(t, client, urls["found"], []string{iam.DefaultAudience}, map[string]string{"owner": "someone"})
	createIAMTestProvider(t, client, urls["other"], []string{iam.DefaultAudience}, map[string]string{IAMManagedByTag: IAMManagedByValue, IAMClusterTag: "team-b/other"})
	full := make([]string, iam.MaxAudiences)
	for i := range full {
		full[i] = fmt.Sprintf("aud-%d", i)
	}
	createIAMTestProvider(t, client, urls["quota"], full, nil)
	before := listIAMTestProviders(t, client)

	logs := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	const interval = 2 * time.Second
	p, err := NewIAMProviders(IAMConfig{
		API: client, Template: tmpl, Audiences: auds, Tags: map[string]string{"team": "platform"},
		Fetcher: host.fetcher, Interval: interval, RetryMin: 100 * time.Millisecond, DeleteRemoved: true,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range clusters {
		pubs, err := p.ForCluster(c, urls[name])
		if err != nil || len(pubs) != 1 {
			t.Fatalf("ForCluster %s: %v, %d publishers", name, err, len(pubs))
		}
		pubs[0].Publish(&documents.Set{})
	}
	time.Sleep(200 * time.Millisecond)
	if after := listIAMTestProviders(t, client); !slices.Equal(after, before) || host.handshakes.Load() != 0 {
		t.Fatalf("before Run (not the leader): providers %v -> %v, %d handshakes", before, after, host.handshakes.Load())
	}

	start := time.Now()
	runIAM(t, p)
	st := waitIAM(t, p, "alpha, beta, found and other registered; quota and toolong failing twice", func(st IAMStatus) bool {
		return st.Registered == 4 && st.Failing == 2 && st.ErrorsTotal >= 4
	})
	t.Logf("4 providers reconciled (2 created) and 2 failing clusters retried in %s", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(st.Errors[urls["quota"]], "LimitExceeded") || !strings.Contains(st.Errors[urls["toolong"]], "255") {
		t.Errorf("errors %v: want quota's LimitExceeded and toolong's length", st.Errors)
	}
	if st.Foreign != 2 {
		t.Errorf("%d providers reported found in place, want 2 (found, other)", st.Foreign)
	}

	tags := func(c ClusterRef) map[string]string {
		return map[string]string{"team": "platform", IAMManagedByTag: IAMManagedByValue, IAMClusterTag: c.String()}
	}
	for _, name := range []string{"alpha", "beta"} {
		got, ok := getIAMTestProvider(t, client, urls[name])
		want := iamTestProvider{URL: iam.HostPath(urls[name]), Audiences: auds, Thumbprints: []string{ca1.thumbprint}, Tags: tags(clusters[name])}
		if !ok || got.URL != want.URL || !slices.Equal(got.Audiences, want.Audiences) || !slices.Equal(got.Thumbprints, want.Thumbprints) || !maps.Equal(got.Tags, want.Tags) {
			t.Errorf("%s: moto has %+v, want %+v", name, got, want)
		}
	}
	// Found in place: brought up to date, the user's tags set, never the fleet's.
	if got, _ := getIAMTestProvider(t, client, urls["found"]); got == nil || !slices.Equal(got.Audiences, auds) ||
		!slices.Equal(got.Thumbprints, []string{ca1.thumbprint, strings.Repeat("0", 40)}) ||
		!maps.Equal(got.Tags, map[string]string{"owner": "someone", "team": "platform"}) {
		t.Errorf("found: moto has %+v", got)
	}
	wantARNs := slices.Sorted(slices.Values(append(slices.Clone(before), iamARNOf(urls["alpha"]), iamARNOf(urls["beta"]))))
	if got := listIAMTestProviders(t, client); !slices.Equal(got, wantARNs) {
		t.Errorf("providers %v, want %v", got, wantARNs)
	}
	// Six clusters reconciled, the failing ones several times: the host was dialled once.
	if n, c := host.handshakes.Load(), host.connects(); n != 1 || c != 1 || st.Thumbprint.Fetches != 1 {
		t.Errorf("%d handshakes, %d CONNECTs, %d fetches for %d reconciles: want the host's thumbprint fetched once for every cluster", n, c, st.Thumbprint.Fetches, st.Reconciles)
	}

	// A CA change reaches every provider at the next interval, with one fetch for them all.
	host.chain.Store(ca2)
	changed := time.Now()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(3 * interval); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; status %+v", what, p.Status())
			}
		}
	}
	for _, name := range []string{"alpha", "beta", "found"} {
		waitFor(name+" gets the new thumbprint", func() bool {
			got, _ := getIAMTestProvider(t, client, urls[name])
			return got != nil && len(got.Thumbprints) > 0 && got.Thumbprints[0] == ca2.thumbprint
		})
	}
	st = p.Status()
	t.Logf("CA change registered for every cluster %s after it; %d reconciles, %d fetches in all", time.Since(changed).Round(time.Millisecond), st.Reconciles, st.Thumbprint.Fetches)
	if got, _ := getIAMTestProvider(t, client, urls["alpha"]); !slices.Equal(got.Thumbprints, []string{ca2.thumbprint, ca1.thumbprint}) {
		t.Errorf("alpha's thumbprints %v, want the new one first and the old one kept", got.Thumbprints)
	}
	// One fetch per interval elapsed (plus the first), whatever the number of clusters.
	if maxFetches := int64(time.Since(start)/interval) + 1; host.handshakes.Load() > maxFetches || host.handshakes.Load() < 2 {
		t.Errorf("%d handshakes in %s with a %s interval: want 2 to %d", host.handshakes.Load(), time.Since(start).Round(time.Millisecond), interval, maxFetches)
	}

	// Removal: only the provider the fleet created for the cluster goes.
	for _, name := range []string{"alpha", "found", "other"} {
		p.Removed(clusters[name], urls[name])
	}
	p.Removed(ClusterRef{"team-x", "beta"}, urls["beta"]) // not the cluster at that URL: ignored
	waitIAM(t, p, "three removals processed", func(st IAMStatus) bool { return st.Clusters == 3 && st.Removing == 0 })
	if st := p.Status(); st.Deleted != 1 {
		t.Errorf("%d providers deleted, want 1 (alpha)", st.Deleted)
	}
	if _, ok := getIAMTestProvider(t, client, urls["alpha"]); ok {
		t.Error("alpha's provider, created by the fleet, was not deleted")
	}
	for _, name := range []string{"beta", "found", "other", "quota"} {
		if _, ok := getIAMTestProvider(t, client, urls[name]); !ok {
			t.Errorf("%s's provider was deleted", name)
		}
	}
	if !strings.Contains(logs.String(), "not deleting the IAM OIDC provider of a removed cluster") {
		t.Error("no log line says why found's and other's providers were kept")
	}
}

// TestIAMProvidersRemovedWithoutDeletion: by default a removed cluster's provider stays, even one
// the fleet created.
func TestIAMProvidersRemovedWithoutDeletion(t *testing.T) {
	client := startIAMTestMoto(t)
	tmpl, err := ParseURLTemplate(testTemplate)
	if err != nil {
		t.Fatal(err)
	}
	pinned := strings.Repeat("ab", 20)
	p, err := NewIAMProviders(IAMConfig{API: client, Template: tmpl, Audiences: []string{iam.DefaultAudience}, Thumbprints: []string{pinned}, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	runIAM(t, p)
	c := ClusterRef{"ns", "a"}
	u, _ := tmpl.Expand(c.Namespace, c.Name)
	pubs, _ := p.ForCluster(c, u)
	pubs[0].Publish(&documents.Set{})
	waitIAM(t, p, "a registered", func(st IAMStatus) bool { return st.Registered == 1 })
	got, ok := getIAMTestProvider(t, client, u)
	if !ok || !slices.Equal(got.Thumbprints, []string{pinned}) || got.Tags[IAMManagedByTag] != IAMManagedByValue {
		t.Fatalf("moto has %+v", got)
	}
	p.Removed(c, u)
	time.Sleep(300 * time.Millisecond)
	if _, ok := getIAMTestProvider(t, client, u); !ok {
		t.Error("the provider was deleted without DeleteRemoved")
	}
	if st := p.Status(); st.Clusters != 0 || st.Thumbprint.Fetches != 0 {
		t.Errorf("status %+v: want the cluster forgotten and no fetch (pinned)", st)
	}
}

func TestNewIAMProvidersRefuses(t *testing.T) {
	ok, err := ParseURLTemplate(testTemplate)
	if err != nil {
		t.Fatal(err)
	}
	port, err := ParseURLTemplate("https://oidc.fleet.test:8443/clusters/{cluster}")
	if err != nil {
		t.Fatal(err)
	}
	api := awsiam.New(awsiam.Options{Region: "us-east-1"})
	for name, tt := range map[string]struct {
		cfg  IAMConfig
		want string
	}{
		"port":        {IAMConfig{API: api, Template: port, Audiences: []string{"sts.amazonaws.com"}, Interval: time.Minute}, "port 8443"},
		"no audience": {IAMConfig{API: api, Template: ok, Interval: time.Minute}, "no audience"},
		"fleet's tag": {IAMConfig{API: api, Template: ok, Audiences: []string{"sts.amazonaws.com"}, Interval: time.Minute, Tags: map[string]string{"App.Kubernetes.io/Managed-By": "me"}}, "the fleet's own"},
		"no API":      {IAMConfig{Template: ok, Audiences: []string{"sts.amazonaws.com"}, Interval: time.Minute}, "API"},
	} {
		if _, err := NewIAMProviders(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tt.want)
		}
	}
}

// TestFleetIAMWithMoto runs the fleet against a real kube-apiserver with mirrors-like publishers and
// IAM registration combined: a cluster's Secret gets its provider registered once its documents
// are published, and after the Secret's deletion and the retention the provider the fleet created
// is deleted.
func TestFleetIAMWithMoto(t *testing.T) {
	cluster := startAPIServer(t)
	kube := kubernetes.NewForConfigOrDie(cluster.RESTConfig())
	createNamespaces(t, kube, "team-a")
	client := startIAMTestMoto(t)
	chain := newIAMTestChain(t, "fleet")
	host := startIAMTestHost(t, chain)
	tmpl, err := ParseURLTemplate(testTemplate)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewIAMProviders(IAMConfig{API: client, Template: tmpl, Audiences: []string{iam.DefaultAudience}, Fetcher: host.fetcher, Interval: time.Hour, DeleteRemoved: true})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingPublishers{}
	h := startFleet(t, kube, func(c *Config) { c.Retention = 2 * time.Second; c.Publishers = Combine(rec, nil, p) })
	runIAM(t, p)
	h.create(capiSecret("team-a", "alpha", newSigningKey(t, false)))
	h.create(capiSecret("team-a", "beta", newSigningKey(t, false)))
	const alpha, beta = "https://" + iamTestHost + "/clusters/alpha", "https://" + iamTestHost + "/clusters/beta"
	h.waitFor("both providers", 20*time.Second, func() bool { return p.Status().Registered == 2 })
	for _, u := range []string{alpha, beta} {
		got, ok := getIAMTestProvider(t, client, u)
		if !ok || !slices.Equal(got.Thumbprints, []string{chain.thumbprint}) || got.Tags[IAMClusterTag] != "team-a/"+u[strings.LastIndex(u, "/")+1:] {
			t.Errorf("%s: moto has %+v", u, got)
		}
	}
	rec.mu.Lock()
	if rec.sets[alpha] == 0 || rec.sets[beta] == 0 {
		t.Errorf("the other publishers got %v: Combine must give every cluster both", rec.sets)
	}
	rec.mu.Unlock()

	if err := kube.CoreV1().Secrets("team-a").Delete(context.Background(), "alpha"+SigningKeySuffix, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitFor("alpha's provider deleted after the retention", 20*time.Second, func() bool { return p.Status().Deleted == 1 })
	if _, ok := getIAMTestProvider(t, client, alpha); ok {
		t.Error("alpha's provider still exists")
	}
	if _, ok := getIAMTestProvider(t, client, beta); !ok {
		t.Error("beta's provider was deleted")
	}
	rec.mu.Lock()
	if !slices.Equal(rec.removed, []string{alpha}) {
		t.Errorf("the other publishers were told of removals %v, want [%s]", rec.removed, alpha)
	}
	rec.mu.Unlock()
	if n := host.handshakes.Load(); n != 1 {
		t.Errorf("%d handshakes for 2 clusters, want 1", n)
	}
}
