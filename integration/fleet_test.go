package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/coreos/go-oidc/v3/oidc"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
)

const (
	fleetClusterLabel = "cluster.x-k8s.io/cluster-name"
	fleetBucket       = "fleet-oidc"
	fleetRetention    = 4 * time.Second
	fleetWorkloadNS   = "apps"
	fleetWorkloadSA   = "deployer"
)

// TestFleet proves `serve --fleet` end to end: a real kube-apiserver is the management cluster
// holding Cluster API `<cluster>-sa` Secrets in two namespaces, a second real kube-apiserver is the
// workload cluster `work` whose --service-account-issuer is the fleet's URL for it. A token that
// workload cluster mints verifies through the fleet with go-oidc; every cluster's documents are its
// own and nothing else is served; a cluster created at runtime is served within a second; a bad
// Secret changes nothing that is served; the documents are mirrored to S3 (moto) per cluster; a
// deleted cluster stays published for the retention, then answers 404 and its objects are removed.
func TestFleet(t *testing.T) {
	skipIfShort(t)
	testStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()

	publicPort, internalPort := freePortPair(t)
	base := fmt.Sprintf("https://127.0.0.1:%d", publicPort)
	ca, err := pki.NewCA("kube-oidc-issuer fleet e2e CA")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, relying := issuerTLS(t, ca, dir)

	keyW := newRSAKey(t, 2048) // workload cluster `work` signs with it
	keyO := newFleetECKey(t)   // cluster `other` (ECDSA P-256), no apiserver
	keyS := newRSAKey(t, 2048) // in an unlabelled Secret: never served
	keyL := newRSAKey(t, 2048) // cluster `late`, created at runtime
	keyB := newFleetECKey(t)   // cluster `bad.name`: refused
	keyM := newRSAKey(t, 2048) // the management cluster's own
	kidW, kidO, kidL := keyW.kid(t), keyO.kid(t), keyL.kid(t)

	f := &fleetEnv{t: t, base: base, relying: relying, caPEM: ca.CertPEM()}
	workIssuer := f.issuerURL("work")

	// 1. Both clusters, started in parallel.
	start := time.Now()
	clusters := startFleetClusters(ctx, t, []testcluster.Config{
		{
			BinDir: shared.binDir, WorkDir: filepath.Join(dir, "management"),
			ServiceAccountIssuers: []string{"https://management.kube-oidc-issuer.test"},
			SigningKeyPEM:         keyM.private,
		},
		{
			BinDir: shared.binDir, WorkDir: filepath.Join(dir, "workload"),
			ServiceAccountIssuers: []string{workIssuer},
			ServiceAccountJWKSURI: workIssuer + "/openid/v1/jwks",
			SigningKeyPEM:         keyW.private,
		},
	})
	mgmt, work := clusters[0].kube, clusters[1].kube
	t.Logf("management and workload kube-apiservers up in %s", time.Since(start).Round(time.Millisecond))

	for _, ns := range []string{"team-a", "team-b"} {
		if _, err := mgmt.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("management: creating namespace %s: %v", ns, err)
		}
	}
	for _, s := range []*corev1.Secret{
		capiKeySecret("team-a", "work", keyW),
		capiKeySecret("team-b", "other", keyO),
		capiKeySecret("team-b", "bad.name", keyB), // a valid Secret name, not a DNS-1123 label: refused
		{ // labelled with the cluster, but not its signing key
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "work-kubeconfig", Labels: map[string]string{fleetClusterLabel: "work"}},
			Type:       clusterAPISecretType,
			Data:       map[string][]byte{"value": []byte("apiVersion: v1\nkind: Config\n"), "tls.crt": keyS.public, "tls.key": keyS.private},
		},
		{ // a signing key by name, but without the Cluster API label
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "stray-sa"},
			Type:       clusterAPISecretType,
			Data:       map[string][]byte{"tls.crt": keyS.public, "tls.key": keyS.private},
		},
	} {
		if _, err := mgmt.CoreV1().Secrets(s.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("management: creating Secret %s/%s: %v", s.Namespace, s.Name, err)
		}
	}
	if _, err := work.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fleetWorkloadNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("workload: creating namespace: %v", err)
	}
	if _, err := work.CoreV1().ServiceAccounts(fleetWorkloadNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: fleetWorkloadSA}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("workload: creating service account: %v", err)
	}

	// 2. S3 (moto) and the fleet issuer.
	store := startMotoStore(t)
	store.createBucket(t, fleetBucket)
	f.store = store
	mgmtKubeconfig := clusters[0].cluster.KubeconfigPath()
	start = time.Now()
	f.iss = startServe(ctx, t, harness.IssuerConfig{
		Args: []string{
			"--fleet",
			"--issuer-url-template", base + "/clusters/{cluster}",
			"--kubeconfig", mgmtKubeconfig,
			"--tls-cert-file", certFile,
			"--tls-key-file", keyFile,
			"--mirror", "s3://" + fleetBucket,
			"--s3-endpoint", store.endpoint,
			"--s3-path-style",
			"--mirror-interval", "2s",
			"--fleet-retention", fleetRetention.String(),
		},
		Env:          append([]string{"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}, store.awsEnv...),
		PublicPort:   publicPort,
		InternalPort: internalPort,
		LogPath:      filepath.Join(dir, "issuer.log"),
	})
	t.Logf("fleet issuer ready in %s", time.Since(start).Round(time.Millisecond))

	code, rz := f.readyz(ctx)
	if code != http.StatusOK || !rz.Fleet.Ready || rz.Fleet.Clusters != 2 || rz.Fleet.Serving != 2 || rz.Fleet.Refused != 1 {
		t.Fatalf("/readyz after start: %d, fleet %+v; want 200, 2 clusters serving, 1 refused (bad.name)", code, rz.Fleet)
	}
	if len(rz.Fleet.Refusals) != 1 || rz.Fleet.Refusals[0].Secret != "team-b/bad.name-sa" || rz.Fleet.Refusals[0].Reason != "bad_name" {
		t.Fatalf("/readyz refusals = %+v, want team-b/bad.name-sa bad_name", rz.Fleet.Refusals)
	}
	if rz.Mirrors == nil {
		t.Fatalf("/readyz has no mirrors check: %s", rz.raw)
	}

	// 3. Each cluster's JWKS holds its own key only; the workload cluster's token verifies.
	workJWKS := f.mustJWKS(ctx, "work", kidW)
	otherJWKS := f.mustJWKS(ctx, "other", kidO)
	theirs := parseJWKS(t, apiserverGetOf(ctx, t, work, "/openid/v1/jwks"))
	if ours := parseJWKS(t, workJWKS); len(ours) != len(theirs) || ours[kidW] != theirs[kidW] {
		t.Fatalf("work's JWKS differs from the workload kube-apiserver's:\nfleet:          %v\nkube-apiserver: %v", ours, theirs)
	}
	tr, err := work.CoreV1().ServiceAccounts(fleetWorkloadNS).CreateToken(ctx, fleetWorkloadSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{stsAudience}, ExpirationSeconds: ptr(int64(3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("workload TokenRequest: %v", err)
	}
	token := tr.Status.Token
	if got := kidOf(t, token); got != kidW {
		t.Fatalf("workload token kid %s, want W's %s", got, kidW)
	}
	f.mustVerify(ctx, workIssuer, token)
	// Isolation: the same token does not verify with another cluster's keys.
	otherKeys := oidc.NewRemoteKeySet(oidc.ClientContext(ctx, relying), f.issuerURL("other")+"/openid/v1/jwks")
	if _, err := oidc.NewVerifier(workIssuer, otherKeys, &oidc.Config{ClientID: stsAudience}).Verify(ctx, token); err == nil {
		t.Fatal("work's token verified with other's JWKS")
	}
	workDisco := f.mustGet(ctx, "work", "/.well-known/openid-configuration")
	otherDisco := f.mustGet(ctx, "other", "/.well-known/openid-configuration")
	if theirs := apiserverGetOf(ctx, t, work, "/.well-known/openid-configuration"); !bytes.Equal(workDisco, theirs) {
		t.Errorf("work's discovery document differs from the workload kube-apiserver's:\nfleet:          %s\nkube-apiserver: %s", workDisco, theirs)
	}
	if !strings.Contains(string(otherDisco), `"issuer":"`+f.issuerURL("other")+`"`) || !strings.Contains(string(otherDisco), `"ES256"`) {
		t.Errorf("other's discovery document: %s", otherDisco)
	}

	// 4. Nothing else is served; the path alone picks the issuer.
	for _, p := range []string{
		"/clusters/nope/openid/v1/jwks", "/clusters/nope/.well-known/openid-configuration",
		"/clusters/work-kubeconfig/openid/v1/jwks", "/clusters/work-kubeconfig/.well-known/openid-configuration",
		"/clusters/stray/openid/v1/jwks", "/clusters/stray/.well-known/openid-configuration",
		"/clusters/bad.name/openid/v1/jwks",
		"/.well-known/openid-configuration", "/openid/v1/jwks", "/clusters/openid/v1/jwks",
		"/clusters/work/openid/v1/jwks/", "/clusters/work//openid/v1/jwks",
		// Raw request targets: sent exactly so, never cleaned by a client.
		"/clusters/other/../work/openid/v1/jwks", "/clusters/other/../work/.well-known/openid-configuration",
		"/clusters/other/%2e%2e/work/openid/v1/jwks", "/clusters/./work/openid/v1/jwks",
		"/clusters/work%2Fopenid/v1/jwks",
	} {
		if status, body := f.rawGet(ctx, p, ""); status != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404: %.200s", p, status, body)
		}
	}
	for _, host := range []string{"work", "work.clusters.example", "evil.example", "127.0.0.1:1"} {
		for path, want := range map[string][]byte{"/openid/v1/jwks": otherJWKS, "/.well-known/openid-configuration": otherDisco} {
			status, body := f.rawGet(ctx, "/clusters/other"+path, host)
			if status != http.StatusOK || !bytes.Equal(body, want) {
				t.Errorf("GET /clusters/other%s with Host %q: %d %s\nwant other's: %s", path, host, status, body, want)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// The refused Secret: a Warning Event, the counter.
	f.waitEvent(ctx, mgmt, "team-b", "bad.name-sa", "FleetClusterRefused")
	if v := metricValue(f.metrics(ctx), `kube_oidc_issuer_fleet_refusals_total{reason="bad_name"}`); v != "1" {
		t.Fatalf(`kube_oidc_issuer_fleet_refusals_total{reason="bad_name"} = %q, want 1`, v)
	}

	// 5. A cluster created at runtime is served within a second.
	createCalled := time.Now()
	if _, err := mgmt.CoreV1().Secrets("team-b").Create(ctx, capiKeySecret("team-b", "late", keyL), metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating team-b/late-sa: %v", err)
	}
	created := time.Now()
	var (
		lateLatency time.Duration
		polls       int
	)
	for {
		polls++
		status, body := f.get(ctx, "late", "/openid/v1/jwks", "")
		if status == http.StatusOK {
			if kids := parseJWKS(t, body); len(kids) == 1 && kids[kidL] != (jwk{}) {
				lateLatency = time.Since(created)
				break
			}
		}
		if time.Since(created) > 10*time.Second {
			t.Fatalf("team-b/late-sa not served 10s after its creation: last %d %s", status, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("runtime-created cluster late: served with its kid %s after its Secret's Create returned (poll %d; the Create call took %s)",
		lateLatency.Round(10*time.Microsecond), polls, created.Sub(createCalled).Round(10*time.Microsecond))
	if lateLatency > time.Second {
		t.Errorf("cluster late was served %s after its Secret's creation, want within 1s", lateLatency)
	}
	lateJWKS := f.mustJWKS(ctx, "late", kidL)
	lateDisco := f.mustGet(ctx, "late", "/.well-known/openid-configuration")

	// 6. A bad Secret keeps its cluster's last good keys and touches no other cluster.
	sec, err := mgmt.CoreV1().Secrets("team-b").Get(ctx, "other-sa", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data["tls.crt"] = []byte("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
	if _, err := mgmt.CoreV1().Secrets("team-b").Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("writing garbage into team-b/other-sa: %v", err)
	}
	garbageAt := time.Now()
	for {
		code, rz = f.readyz(ctx)
		if code != http.StatusOK {
			t.Fatalf("/readyz %d after a bad Secret, want 200: %s", code, rz.raw)
		}
		if rz.Fleet.Failing == 1 {
			break
		}
		if time.Since(garbageAt) > 10*time.Second {
			t.Fatalf("/readyz never showed the bad Secret (failing=1): %s", rz.raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("bad Secret seen as failing after %s", time.Since(garbageAt).Round(time.Millisecond))
	if rz.Fleet.Serving != 2 || rz.Fleet.Clusters != 3 || len(rz.Fleet.Problems) != 1 || rz.Fleet.Problems[0].Cluster != "other" ||
		rz.Fleet.Problems[0].Namespace != "team-b" || rz.Fleet.Problems[0].Healthy || rz.Fleet.Problems[0].LastError == "" || rz.Fleet.Problems[0].Keys != 1 {
		t.Fatalf("/readyz fleet after the bad Secret: %+v", rz.Fleet)
	}
	for cluster, want := range map[string][][]byte{"work": {workJWKS, workDisco}, "other": {otherJWKS, otherDisco}, "late": {lateJWKS, lateDisco}} {
		if got := f.mustGet(ctx, cluster, "/openid/v1/jwks"); !bytes.Equal(got, want[0]) {
			t.Errorf("%s's JWKS changed after other's Secret turned bad:\nbefore: %s\nafter:  %s", cluster, want[0], got)
		}
		if got := f.mustGet(ctx, cluster, "/.well-known/openid-configuration"); !bytes.Equal(got, want[1]) {
			t.Errorf("%s's discovery changed after other's Secret turned bad:\nbefore: %s\nafter:  %s", cluster, want[1], got)
		}
	}
	metrics := f.metrics(ctx)
	for series, want := range map[string]string{
		`kube_oidc_issuer_fleet_cluster_healthy{cluster="other",namespace="team-b"}`: "0",
		`kube_oidc_issuer_fleet_cluster_keys{cluster="other",namespace="team-b"}`:    "1",
		`kube_oidc_issuer_fleet_cluster_healthy{cluster="work",namespace="team-a"}`:  "1",
		`kube_oidc_issuer_fleet_cluster_healthy{cluster="late",namespace="team-b"}`:  "1",
		`kube_oidc_issuer_fleet_clusters{state="failing"}`:                           "1",
		`kube_oidc_issuer_fleet_clusters{state="serving"}`:                           "2",
		`kube_oidc_issuer_fleet_clusters{state="refused"}`:                           "1",
	} {
		if got := metricValue(metrics, series); got != want {
			t.Errorf("%s = %q, want %s", series, got, want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// 7. Every cluster's documents are mirrored under its issuer path.
	start = time.Now()
	want := map[string][]byte{
		"clusters/work/openid/v1/jwks": workJWKS, "clusters/work/.well-known/openid-configuration": workDisco,
		"clusters/other/openid/v1/jwks": otherJWKS, "clusters/other/.well-known/openid-configuration": otherDisco,
		"clusters/late/openid/v1/jwks": lateJWKS, "clusters/late/.well-known/openid-configuration": lateDisco,
	}
	f.waitObjects(ctx, 15*time.Second, "mirrored", func(key string, found bool, body []byte) bool {
		return found && bytes.Equal(body, want[key])
	}, keysOfBytes(want)...)
	t.Logf("S3 objects of work, other and late equal the served documents (checked after %s)", time.Since(start).Round(time.Millisecond))

	// 8. Deletion: retained for the retention, then 404 and its objects removed.
	if err := mgmt.CoreV1().Secrets("team-a").Delete(ctx, "work-sa", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("deleting team-a/work-sa: %v", err)
	}
	deleted := time.Now()
	var (
		lastServed, gone time.Duration
		sawRetained      bool
		verifiedDuring   bool
	)
	for gone == 0 {
		status, body := f.get(ctx, "work", "/openid/v1/jwks", "")
		elapsed := time.Since(deleted)
		switch {
		case status == http.StatusOK && bytes.Equal(body, workJWKS):
			lastServed = elapsed
		case status == http.StatusNotFound:
			gone = elapsed
			continue
		default:
			t.Fatalf("work's JWKS %s after its Secret's deletion: %d %s", elapsed, status, body)
		}
		if !sawRetained && elapsed > 500*time.Millisecond {
			code, rz := f.readyz(ctx)
			for _, p := range rz.Fleet.Problems {
				if p.Cluster == "work" && p.Namespace == "team-a" && p.DeletedAt != nil && p.Keys == 1 {
					sawRetained = code == http.StatusOK && rz.Fleet.Retained == 1
				}
			}
		}
		if !verifiedDuring && elapsed > time.Second && elapsed < fleetRetention-time.Second {
			f.mustVerify(ctx, workIssuer, token) // relying parties still verify during the retention
			verifiedDuring = true
		}
		if elapsed > fleetRetention+5*time.Second {
			t.Fatalf("work still served %s after its Secret's deletion (retention %s)", elapsed, fleetRetention)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("deleted cluster work: last served %s after the Delete, 404 from %s (retention %s)",
		lastServed.Round(time.Millisecond), gone.Round(time.Millisecond), fleetRetention)
	if gone < fleetRetention-100*time.Millisecond {
		t.Errorf("work answered 404 %s after its Secret's deletion, before the retention %s ended", gone, fleetRetention)
	}
	if !sawRetained {
		t.Errorf("/readyz (200, retained=1, work listed with deletedAt) never showed work as retained during the retention")
	}
	if !verifiedDuring {
		t.Errorf("no go-oidc verification happened during the retention")
	}
	if status, body := f.get(ctx, "work", "/.well-known/openid-configuration", ""); status != http.StatusNotFound {
		t.Errorf("work's discovery after the retention: %d %s, want 404", status, body)
	}
	f.waitObjects(ctx, 20*time.Second, "removed", func(_ string, found bool, _ []byte) bool { return !found },
		"clusters/work/openid/v1/jwks", "clusters/work/.well-known/openid-configuration")
	s3Gone := time.Since(deleted)
	t.Logf("work's S3 objects gone %s after the Delete (%s after its paths turned 404)",
		s3Gone.Round(time.Millisecond), (s3Gone - gone).Round(time.Millisecond))
	delete(want, "clusters/work/openid/v1/jwks")
	delete(want, "clusters/work/.well-known/openid-configuration")
	f.waitObjects(ctx, 0, "kept", func(key string, found bool, body []byte) bool {
		return found && bytes.Equal(body, want[key])
	}, keysOfBytes(want)...)
	for cluster, want := range map[string][]byte{"other": otherJWKS, "late": lateJWKS} {
		if got := f.mustGet(ctx, cluster, "/openid/v1/jwks"); !bytes.Equal(got, want) {
			t.Errorf("%s's JWKS changed after work's removal: %s", cluster, got)
		}
	}
	code, rz = f.readyz(ctx)
	if code != http.StatusOK || rz.Fleet.Clusters != 2 || rz.Fleet.Retained != 0 || rz.Fleet.Failing != 1 {
		t.Errorf("/readyz after work's removal: %d %+v", code, rz.Fleet)
	}
	if v := metricValue(f.metrics(ctx), `kube_oidc_issuer_fleet_cluster_keys{cluster="work",namespace="team-a"}`); v != "" {
		t.Errorf("work's per-cluster series still exported after its removal: %s", v)
	}

	// 9. SIGTERM: a clean exit.
	if err := f.iss.Stop(); err != nil {
		t.Fatalf("the fleet issuer did not stop cleanly on SIGTERM: %v", err)
	}
	if log := f.iss.Log(); !strings.Contains(log, `msg=stopped`) {
		t.Errorf("no 'stopped' in the issuer log:\n%s", f.iss.LogTail(3000))
	}
	t.Logf("TestFleet took %s", time.Since(testStart).Round(time.Millisecond))
}

// fleetEnv is the running fleet issuer as a relying party and an operator see it.
type fleetEnv struct {
	t       *testing.T
	base    string // https://127.0.0.1:PORT
	relying *http.Client
	caPEM   []byte
	iss     *harness.Issuer
	store   *s3Store
}

func (f *fleetEnv) issuerURL(cluster string) string { return f.base + "/clusters/" + cluster }

// get fetches one of a cluster's documents; host, if set, replaces the Host header.
func (f *fleetEnv) get(ctx context.Context, cluster, path, host string) (int, []byte) {
	f.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.issuerURL(cluster)+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := f.relying.Do(req)
	if err != nil {
		f.t.Fatalf("GET %s: %v", req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.StatusCode, body
}

func (f *fleetEnv) mustGet(ctx context.Context, cluster, path string) []byte {
	f.t.Helper()
	status, body := f.get(ctx, cluster, path, "")
	if status != http.StatusOK {
		f.t.Fatalf("GET %s%s: %d %s", f.issuerURL(cluster), path, status, body)
	}
	return body
}

// mustJWKS returns a cluster's JWKS, which must hold exactly kid.
func (f *fleetEnv) mustJWKS(ctx context.Context, cluster, kid string) []byte {
	f.t.Helper()
	body := f.mustGet(ctx, cluster, "/openid/v1/jwks")
	if kids := keysOf(parseJWKS(f.t, body)); len(kids) != 1 || kids[0] != kid {
		f.t.Fatalf("%s's JWKS kids = %v, want exactly [%s]", cluster, kids, kid)
	}
	return body
}

// rawGet sends the request target exactly as given over a fresh TLS connection (no client-side
// path cleaning or escaping), with Host host (default: the listener's address).
func (f *fleetEnv) rawGet(ctx context.Context, target, host string) (int, []byte) {
	f.t.Helper()
	addr := strings.TrimPrefix(f.base, "https://")
	if host == "" {
		host = addr
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.caPEM)
	d := tls.Dialer{Config: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		f.t.Fatalf("dialing %s: %v", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, host); err != nil {
		f.t.Fatalf("writing GET %s: %v", target, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		f.t.Fatalf("reading the answer to GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// mustVerify verifies token as a relying party of issuerURL: discovery, JWKS, signature, iss, aud.
func (f *fleetEnv) mustVerify(ctx context.Context, issuerURL, token string) {
	f.t.Helper()
	octx := oidc.ClientContext(ctx, f.relying)
	provider, err := oidc.NewProvider(octx, issuerURL)
	if err != nil {
		f.t.Fatalf("go-oidc discovery of %s: %v", issuerURL, err)
	}
	idt, err := provider.Verifier(&oidc.Config{ClientID: stsAudience}).Verify(octx, token)
	if err != nil {
		f.t.Fatalf("go-oidc rejected the workload cluster's token through %s: %v", issuerURL, err)
	}
	if want := "system:serviceaccount:" + fleetWorkloadNS + ":" + fleetWorkloadSA; idt.Subject != want {
		f.t.Fatalf("sub = %q, want %q", idt.Subject, want)
	}
}

// fleetReadyz is /readyz in fleet mode.
type fleetReadyz struct {
	Ready  bool `json:"ready"`
	Checks struct {
		Fleet   fleetCheck      `json:"fleet"`
		Mirrors json.RawMessage `json:"mirrors"`
	} `json:"checks"`
	Fleet   fleetCheck      `json:"-"`
	Mirrors json.RawMessage `json:"-"`
	raw     string
}

type fleetCheck struct {
	Ready    bool `json:"ready"`
	Clusters int  `json:"clusters"`
	Serving  int  `json:"serving"`
	Waiting  int  `json:"waiting"`
	Failing  int  `json:"failing"`
	Retained int  `json:"retained"`
	Refused  int  `json:"refused"`
	Problems []struct {
		Namespace string     `json:"namespace"`
		Cluster   string     `json:"cluster"`
		Issuer    string     `json:"issuer"`
		Ready     bool       `json:"ready"`
		Healthy   bool       `json:"healthy"`
		Keys      int        `json:"keys"`
		LastError string     `json:"lastError"`
		DeletedAt *time.Time `json:"deletedAt"`
	} `json:"problems"`
	Refusals []struct {
		Secret string `json:"secret"`
		Reason string `json:"reason"`
		Detail string `json:"detail"`
	} `json:"refusals"`
}

func (f *fleetEnv) readyz(ctx context.Context) (int, fleetReadyz) {
	f.t.Helper()
	code, body, err := fetch(ctx, http.DefaultClient, f.iss.InternalURL+"/readyz")
	if err != nil {
		f.t.Fatal(err)
	}
	var rz fleetReadyz
	if err := json.Unmarshal(body, &rz); err != nil {
		f.t.Fatalf("/readyz body is not JSON: %v: %s", err, body)
	}
	rz.Fleet, rz.Mirrors, rz.raw = rz.Checks.Fleet, rz.Checks.Mirrors, string(body)
	return code, rz
}

func (f *fleetEnv) metrics(ctx context.Context) string {
	f.t.Helper()
	_, b, err := fetch(ctx, http.DefaultClient, f.iss.InternalURL+"/metrics")
	if err != nil {
		f.t.Fatal(err)
	}
	return string(b)
}

// waitObjects polls the bucket (admin client) until ok holds for every key; timeout 0 checks once.
func (f *fleetEnv) waitObjects(ctx context.Context, timeout time.Duration, what string, ok func(key string, found bool, body []byte) bool, keys ...string) {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var bad []string
		for _, key := range keys {
			found, body, err := f.object(ctx, key)
			if err != nil {
				bad = append(bad, fmt.Sprintf("%s: %v", key, err))
			} else if !ok(key, found, body) {
				bad = append(bad, fmt.Sprintf("%s: found=%v %.300s", key, found, body))
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			_, rz := f.readyz(ctx)
			f.t.Fatalf("S3 objects not %s within %s:\n%s\nmirrors: %s", what, timeout, strings.Join(bad, "\n"), rz.Mirrors)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (f *fleetEnv) object(ctx context.Context, key string) (found bool, body []byte, err error) {
	out, err := f.store.admin.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(fleetBucket), Key: aws.String(key)})
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode() == "NoSuchKey" || apiErr.ErrorCode() == "NotFound") {
		return false, nil, nil
	}
	if err != nil {
		return false, nil, err
	}
	defer out.Body.Close()
	body, err = io.ReadAll(out.Body)
	return err == nil, body, err
}

// waitEvent waits for a Warning Event with reason on the Secret ns/name.
func (f *fleetEnv) waitEvent(ctx context.Context, kube kubernetes.Interface, ns, name, reason string) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, err := kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err != nil {
			f.t.Fatal(err)
		}
		for _, ev := range evs.Items {
			if ev.Reason == reason && ev.Type == corev1.EventTypeWarning && ev.InvolvedObject.Kind == "Secret" {
				f.t.Logf("Event on %s/%s: %s %s: %s", ns, name, ev.Type, ev.Reason, ev.Message)
				return
			}
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("no Warning Event %s on Secret %s/%s (have %d Events)", reason, ns, name, len(evs.Items))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// capiKeySecret is the Cluster API signing-key Secret of cluster in ns: public key in tls.crt,
// private key in tls.key.
func capiKeySecret(ns, cluster string, k signingKey) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: cluster + "-sa", Labels: map[string]string{fleetClusterLabel: cluster}},
		Type:       clusterAPISecretType,
		Data:       map[string][]byte{"tls.crt": k.public, "tls.key": k.private},
	}
}

func newFleetECKey(t *testing.T) signingKey {
	t.Helper()
	priv, pub, err := pki.GenerateECDSAKeyPEM(elliptic.P256())
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{name: "p256", private: priv, public: pub}
}

// startFleetClusters starts one etcd + kube-apiserver per configuration, concurrently, and stops
// them when the test ends.
func startFleetClusters(ctx context.Context, t *testing.T, cfgs []testcluster.Config) []fleetCluster {
	t.Helper()
	type result struct {
		c   *testcluster.Cluster
		err error
	}
	results := make([]result, len(cfgs))
	var wg sync.WaitGroup
	for i, cfg := range cfgs {
		wg.Go(func() {
			c, err := testcluster.Start(ctx, cfg)
			results[i] = result{c, err}
		})
	}
	wg.Wait()
	for _, r := range results {
		if r.c != nil {
			t.Cleanup(func() {
				if err := r.c.Stop(); err != nil {
					t.Errorf("stopping a cluster: %v", err)
				}
			})
		}
	}
	out := make([]fleetCluster, len(cfgs))
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("starting cluster %d: %v", i, r.err)
		}
		kube, err := kubernetes.NewForConfig(r.c.RESTConfig())
		if err != nil {
			t.Fatal(err)
		}
		out[i] = fleetCluster{cluster: r.c, kube: kube}
	}
	return out
}

type fleetCluster struct {
	cluster *testcluster.Cluster
	kube    *kubernetes.Clientset
}

// apiserverGetOf reads one of a kube-apiserver's own documents as the admin.
func apiserverGetOf(ctx context.Context, t *testing.T, kube kubernetes.Interface, path string) []byte {
	t.Helper()
	body, err := kube.Discovery().RESTClient().Get().AbsPath(path).DoRaw(ctx)
	if err != nil {
		t.Fatalf("kube-apiserver GET %s: %v", path, err)
	}
	return body
}

func keysOfBytes(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
