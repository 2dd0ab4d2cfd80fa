// Command benchfleet is `make bench-fleet`: a scripted load run of fleet mode that prints figures.
// It is not a test and asserts nothing: the targets are reported PASS/MISS, and the exit status is
// non-zero only when the run itself failed. Run it through hack/bench-fleet.sh, which builds the
// release binary it is given.
//
// It starts a real etcd and kube-apiserver as the management cluster and creates, for each of
// --clusters clusters (spread over 10 namespaces), the Secrets Cluster API keeps for a workload
// cluster: `<cluster>-sa` (ECDSA P-256 signing key, Cluster API layout), `<cluster>-kubeconfig` and
// `<cluster>-ca`, all labelled cluster.x-k8s.io/cluster-name. Then it starts the release binary in
// fleet mode and measures:
//
//   - start to ready: process start → /readyz 200 (every listed cluster processed), and → every
//     cluster's JWKS answering 200 with its own kid;
//   - memory: resident set once ready and its peak (VmRSS, VmHWM), next to a single-cluster
//     `serve` of one of the same Secrets;
//   - Secret change → served: one cluster's Secret gets a new key, the time until its JWKS serves
//     the new kid (polled every 2 ms), --changes times over different clusters;
//   - JWKS throughput of one cluster of the fleet against the single-cluster issuer serving the same
//     Secret, with wrk, alternating rounds, both pinned to the same CPU (wrk on the other).
//
// Everything listens on 127.0.0.1, every wait is bounded, and everything started is stopped on
// return and on Ctrl-C (children die with this process).
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/cmd/internal/procmem"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/freeport"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
)

// Targets (issue 11), reported and not asserted.
const (
	targetRSS       = 96 << 20
	targetReady     = 10 * time.Second
	targetChangeP99 = 250 * time.Millisecond
	targetRatio     = 0.9
)

const (
	namespaces  = 10
	template    = "https://oidc.bench.test/clusters/{cluster}"
	clusterName = "cluster.x-k8s.io/cluster-name"
)

type options struct {
	issuerBin, wrkBin, workDir string
	clusters, changes, rounds  int
	duration                   time.Duration
	pin                        bool
}

func main() {
	var o options
	flag.StringVar(&o.issuerBin, "issuer-bin", "", "the kube-oidc-issuer binary to measure (release build)")
	flag.StringVar(&o.wrkBin, "wrk", "wrk", "wrk binary")
	flag.StringVar(&o.workDir, "work-dir", "", "working directory (default: a temporary one, removed at the end)")
	flag.IntVar(&o.clusters, "clusters", 1000, "clusters in the fleet")
	flag.IntVar(&o.changes, "changes", 100, "Secret changes measured")
	flag.IntVar(&o.rounds, "rounds", 3, "wrk rounds per server")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each wrk run")
	flag.BoolVar(&o.pin, "pin", true, "pin the servers to CPU 0 and wrk to CPU 1 (taskset)")
	flag.Parse()
	if o.issuerBin == "" || o.clusters < 1 || o.changes < 1 || o.rounds < 1 {
		fmt.Fprintln(os.Stderr, "benchfleet: --issuer-bin is required; --clusters, --changes and --rounds must be positive")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "benchfleet:", err)
		os.Exit(1)
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...)
}

type key struct {
	priv, pub []byte
	kid       string
}

func newKey() (key, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return key{}, err
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return key{}, err
	}
	spki, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return key{}, err
	}
	sum := sha256.Sum256(spki)
	return key{
		priv: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}),
		pub:  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}),
		kid:  base64.RawURLEncoding.EncodeToString(sum[:]),
	}, nil
}

func clusterRef(i int) (ns, name string) {
	return fmt.Sprintf("fleet-%d", i%namespaces), fmt.Sprintf("c-%04d", i)
}

func saSecret(i int, k key) *corev1.Secret {
	ns, name := clusterRef(i)
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-sa", Labels: map[string]string{clusterName: name}},
		Type:       "cluster.x-k8s.io/secret",
		Data:       map[string][]byte{"tls.crt": k.pub, "tls.key": k.priv},
	}
}

type result struct {
	ready, allServed    time.Duration
	fleetMem, singleMem procMemory
	changes             []time.Duration
	fleetRPS, singleRPS []float64
}

func run(ctx context.Context, o options) (err error) {
	begin := time.Now()
	work := o.workDir
	if work == "" {
		if work, err = os.MkdirTemp("", "kube-oidc-issuer-bench-fleet-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	}
	progress("starting etcd and kube-apiserver (the management cluster)")
	bin, err := testcluster.BinDir(ctx, os.Stderr)
	if err != nil {
		return err
	}
	signing, _, err := pki.GenerateRSAKeyPEM(2048)
	if err != nil {
		return err
	}
	mgmt, err := testcluster.Start(ctx, testcluster.Config{BinDir: bin, WorkDir: filepath.Join(work, "cluster"),
		ServiceAccountIssuers: []string{"https://management.bench.test"}, SigningKeyPEM: signing})
	if err != nil {
		return err
	}
	defer mgmt.Stop()
	cfg := mgmt.RESTConfig()
	cfg.QPS, cfg.Burst = 1000, 2000
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	keys, err := createFleet(ctx, kube, o.clusters)
	if err != nil {
		return err
	}

	var res result
	ports, err := freeport.TakeN(4)
	if err != nil {
		return err
	}
	progress("starting the fleet issuer (%d clusters)", o.clusters)
	fleetStart := time.Now()
	fleetProc, err := startIssuer(o, filepath.Join(work, "fleet.log"), ports[0], ports[1],
		"--fleet", "--issuer-url-template", template, "--kubeconfig", mgmt.KubeconfigPath())
	if err != nil {
		return err
	}
	defer fleetProc.stop()
	client := &http.Client{Timeout: 5 * time.Second}
	if err := waitStatus(ctx, client, fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[1]), 60*time.Second, fleetProc); err != nil {
		return fmt.Errorf("fleet issuer not ready: %w\n%s", err, tail(filepath.Join(work, "fleet.log")))
	}
	res.ready = time.Since(fleetStart)
	fleetBase := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	if err := waitAllServed(ctx, client, fleetBase, keys, 60*time.Second); err != nil {
		return err
	}
	res.allServed = time.Since(fleetStart)
	progress("ready in %s, every cluster served in %s", res.ready.Round(time.Millisecond), res.allServed.Round(time.Millisecond))
	time.Sleep(3 * time.Second) // settle after the start's burst
	if res.fleetMem, err = readProcMemory(fleetProc.pid()); err != nil {
		return err
	}

	progress("measuring %d Secret changes → served", o.changes)
	if res.changes, err = measureChanges(ctx, kube, client, fleetBase, keys, o.changes); err != nil {
		return err
	}

	// The single-cluster issuer serves the Secret of the cluster whose JWKS wrk loads in the fleet.
	probe := len(keys) / 2
	ns, name := clusterRef(probe)
	singleURL := strings.ReplaceAll(template, "{cluster}", name)
	single, err := startIssuer(o, filepath.Join(work, "single.log"), ports[2], ports[3],
		"--issuer-url", singleURL, "--secret", ns+"/"+name+"-sa", "--kubeconfig", mgmt.KubeconfigPath(), "--signing-probe-interval", "0")
	if err != nil {
		return err
	}
	defer single.stop()
	if err := waitStatus(ctx, client, fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[3]), 60*time.Second, single); err != nil {
		return fmt.Errorf("single-cluster issuer not ready: %w\n%s", err, tail(filepath.Join(work, "single.log")))
	}
	time.Sleep(3 * time.Second)
	if res.singleMem, err = readProcMemory(single.pid()); err != nil {
		return err
	}
	path := "/clusters/" + name + "/openid/v1/jwks"
	for r := range o.rounds {
		for _, s := range []struct {
			label string
			base  string
			into  *[]float64
		}{{"fleet", fleetBase, &res.fleetRPS}, {"single", fmt.Sprintf("http://127.0.0.1:%d", ports[2]), &res.singleRPS}} {
			rps, err := runWrk(ctx, o, s.base+path)
			if err != nil {
				return err
			}
			progress("round %d %s: %.0f req/s", r+1, s.label, rps)
			*s.into = append(*s.into, rps)
		}
	}
	if m, err := readProcMemory(fleetProc.pid()); err == nil {
		res.fleetMem.HWM = max(res.fleetMem.HWM, m.HWM)
	}
	report(os.Stdout, o, res, time.Since(begin))
	return nil
}

// createFleet creates the clusters' Secrets with 16 concurrent writers; it returns each
// cluster's signing key.
func createFleet(ctx context.Context, kube kubernetes.Interface, n int) ([]key, error) {
	begin := time.Now()
	for i := range namespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("fleet-%d", i)}}
		if _, err := kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	keys := make([]key, n)
	kubeconfig := bytes.Repeat([]byte("x"), 5<<10) // a workload cluster's admin kubeconfig is ~5 KiB
	jobs := make(chan int)
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range jobs {
				k, err := newKey()
				if err != nil {
					errs <- err
					return
				}
				keys[i] = k
				ns, name := clusterRef(i)
				labels := map[string]string{clusterName: name}
				for _, s := range []*corev1.Secret{
					saSecret(i, k),
					{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-kubeconfig", Labels: labels}, Type: "cluster.x-k8s.io/secret", Data: map[string][]byte{"value": kubeconfig}},
					{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-ca", Labels: labels}, Type: "cluster.x-k8s.io/secret", Data: map[string][]byte{"tls.crt": k.pub, "tls.key": k.priv}},
				} {
					if _, err := kube.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
						errs <- fmt.Errorf("creating Secret %s/%s: %w", ns, s.Name, err)
						return
					}
				}
			}
		})
	}
	var firstErr error
feed:
	for i := range n {
		select {
		case jobs <- i:
		case firstErr = <-errs:
			break feed
		case <-ctx.Done():
			firstErr = ctx.Err()
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr == nil && len(errs) > 0 {
		firstErr = <-errs
	}
	if firstErr != nil {
		return nil, firstErr
	}
	progress("created %d clusters (%d Secrets) in %s", n, 3*n, time.Since(begin).Round(time.Millisecond))
	return keys, nil
}

// child is a process started by benchfleet, in its own process group, killed with it.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startIssuer(o options, logPath string, public, internal int, args ...string) (*child, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	argv := append([]string{o.issuerBin, "serve", "--listen", fmt.Sprintf("127.0.0.1:%d", public),
		"--internal-listen", fmt.Sprintf("127.0.0.1:%d", internal), "--log-level", "warn"}, args...)
	if o.pin {
		argv = append([]string{"taskset", "-c", "0"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
}

func waitStatus(ctx context.Context, client *http.Client, url string, limit time.Duration, c *child) error {
	deadline := time.Now().Add(limit)
	for {
		select {
		case <-c.done:
			return errors.New("the issuer exited")
		default:
		}
		if resp, err := client.Get(url); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not 200 within %s", url, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func jwksKIDs(client *http.Client, url string) ([]string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	var jwks struct {
		Keys []struct {
			KID string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &jwks); err != nil {
		return nil, err
	}
	out := make([]string, len(jwks.Keys))
	for i, k := range jwks.Keys {
		out[i] = k.KID
	}
	return out, nil
}

func jwksURL(base string, i int) string {
	_, name := clusterRef(i)
	return base + "/clusters/" + name + "/openid/v1/jwks"
}

// waitAllServed waits until every cluster's JWKS holds exactly its own kid.
func waitAllServed(ctx context.Context, client *http.Client, base string, keys []key, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for i := 0; i < len(keys); {
		kids, err := jwksKIDs(client, jwksURL(base, i))
		if err == nil && slices.Equal(kids, []string{keys[i].kid}) {
			i++
			continue
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster %d not served with its own key within %s: %v %v", i, limit, kids, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// measureChanges gives n clusters (spread over the fleet) a new key each, one at a time, and
// returns the time from each update's answer to its new kid being served.
func measureChanges(ctx context.Context, kube kubernetes.Interface, client *http.Client, base string, keys []key, n int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for c := range n {
		i := (c * 7919) % len(keys) // spread over the fleet
		k, err := newKey()
		if err != nil {
			return nil, err
		}
		sec := saSecret(i, k)
		cur, err := kube.CoreV1().Secrets(sec.Namespace).Get(ctx, sec.Name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		cur.Data = sec.Data
		if _, err := kube.CoreV1().Secrets(sec.Namespace).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return nil, err
		}
		written := time.Now()
		for {
			kids, err := jwksKIDs(client, jwksURL(base, i))
			if err == nil && slices.Equal(kids, []string{k.kid}) {
				out = append(out, time.Since(written))
				break
			}
			if time.Since(written) > 10*time.Second {
				return nil, fmt.Errorf("cluster %d's new key not served within 10s", i)
			}
			time.Sleep(2 * time.Millisecond)
		}
		keys[i] = k
	}
	return out, nil
}

var rpsLine = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)

func runWrk(ctx context.Context, o options, url string) (float64, error) {
	argv := []string{o.wrkBin, "-t1", "-c50", "-d" + strconv.Itoa(int(o.duration.Seconds())) + "s", url}
	if o.pin {
		argv = append([]string{"taskset", "-c", "1"}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk: %w: %s", err, out)
	}
	if bytes.Contains(out, []byte("Non-2xx")) || bytes.Contains(out, []byte("Socket errors")) {
		return 0, fmt.Errorf("wrk saw errors: %s", out)
	}
	m := rpsLine.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no Requests/sec in wrk's output: %s", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

type procMemory = procmem.Memory

var readProcMemory = procmem.Read

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func nearestRank(v []time.Duration, p float64) time.Duration {
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func passMiss(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func report(w io.Writer, o options, r result, took time.Duration) {
	fmt.Fprintf(w, "\nbench-fleet: %d clusters (%d Secrets: -sa, -kubeconfig, -ca each) in %d namespaces, release binary, %s\n",
		o.clusters, 3*o.clusters, namespaces, time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "  start → /readyz 200          %8s   (target ≤ %s: %s)\n", r.ready.Round(time.Millisecond), targetReady, passMiss(r.ready <= targetReady))
	fmt.Fprintf(w, "  start → every JWKS served     %8s\n", r.allServed.Round(time.Millisecond))
	fmt.Fprintf(w, "  RSS once ready                %8s   peak %s   (target ≤ %s: %s)\n", mib(r.fleetMem.RSS), mib(r.fleetMem.HWM), mib(targetRSS), passMiss(r.fleetMem.HWM <= targetRSS))
	fmt.Fprintf(w, "  single-cluster serve RSS      %8s   peak %s   (same machine, one Secret)\n", mib(r.singleMem.RSS), mib(r.singleMem.HWM))
	if o.clusters > 1 {
		fmt.Fprintf(w, "  per further cluster           %8.1f KiB (RSS once ready - single-cluster RSS) / (clusters - 1)\n",
			float64(r.fleetMem.RSS-r.singleMem.RSS)/1024/float64(o.clusters-1))
	}
	p99 := nearestRank(r.changes, 0.99)
	fmt.Fprintf(w, "  Secret change → served        p50 %s  p90 %s  p99 %s  max %s over %d changes   (target p99 ≤ %s: %s)\n",
		nearestRank(r.changes, 0.5).Round(100*time.Microsecond), nearestRank(r.changes, 0.9).Round(100*time.Microsecond),
		p99.Round(100*time.Microsecond), slices.Max(r.changes).Round(100*time.Microsecond), len(r.changes), targetChangeP99, passMiss(p99 <= targetChangeP99))
	ratio := median(r.fleetRPS) / median(r.singleRPS)
	fmt.Fprintf(w, "  JWKS req/s, one cluster       fleet %.0f  single %.0f  ratio %.3f   (wrk -t1 -c50, %d × %s, medians; target ≥ %.2f: %s)\n",
		median(r.fleetRPS), median(r.singleRPS), ratio, o.rounds, o.duration, targetRatio, passMiss(ratio >= targetRatio))
	fmt.Fprintf(w, "  rounds: fleet %v  single %v\n", roundAll(r.fleetRPS), roundAll(r.singleRPS))
	fmt.Fprintf(w, "  run took %s\n", took.Round(time.Second))
}

func roundAll(v []float64) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x + 0.5)
	}
	return out
}
