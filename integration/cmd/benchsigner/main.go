// Command benchsigner is `make bench-signer`: the figures of the KEP-740 external signer.
//
//  1. Sign over the unix socket: the signer (package signer, in this process) answers a gRPC
//     client on one connection, as kube-apiserver holds one, with 1 and 50 concurrent callers, for
//     RS256 and ES256; it prints calls/s, p50 and p99.
//  2. TokenRequest through a real kube-apiserver: one started with --service-account-signing-endpoint
//     against the signer, one with the same RSA key as a local file, each under 50 concurrent
//     TokenRequest callers, in alternating rounds; it prints tokens/s of both and their ratio (target
//     ≥ 0.95), and how often kube-apiserver called FetchKeys (calls per minute).
//
// Targets are reported, not asserted: it exits non-zero only when the run itself failed.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	externaljwtv1 "k8s.io/externaljwt/apis/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/signer"
)

func main() {
	signDuration := flag.Duration("sign-duration", 5*time.Second, "length of each Sign measurement")
	tokenDuration := flag.Duration("token-duration", 10*time.Second, "length of each TokenRequest round")
	rounds := flag.Int("rounds", 3, "TokenRequest rounds per configuration (alternating)")
	callers := flag.Int("callers", 50, "concurrent callers in the concurrent runs")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *signDuration, *tokenDuration, *rounds, *callers); err != nil {
		fmt.Fprintln(os.Stderr, "bench-signer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, signDuration, tokenDuration time.Duration, rounds, callers int) error {
	work, err := os.MkdirTemp("", "koi-bsg")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	fmt.Printf("Sign over the unix socket (one gRPC connection, %s per run)\n", signDuration)
	fmt.Printf("  %-6s %7s %10s %10s %10s\n", "alg", "callers", "calls/s", "p50", "p99")
	for _, alg := range []string{"RS256", "ES256"} {
		key, err := newKey(alg)
		if err != nil {
			return err
		}
		for _, n := range []int{1, callers} {
			r, err := measureSign(ctx, filepath.Join(work, "s.sock"), key, n, signDuration)
			if err != nil {
				return fmt.Errorf("%s with %d callers: %w", alg, n, err)
			}
			fmt.Printf("  %-6s %7d %10.0f %10s %10s\n", alg, n, r.rate, r.p50, r.p99)
		}
	}
	return measureTokenRequests(ctx, work, tokenDuration, rounds, callers)
}

type latencies struct {
	rate     float64
	p50, p99 time.Duration
}

func summarize(took []time.Duration, elapsed time.Duration) latencies {
	slices.Sort(took)
	at := func(q float64) time.Duration {
		return took[min(len(took)-1, int(q*float64(len(took))))].Round(time.Microsecond)
	}
	return latencies{rate: float64(len(took)) / elapsed.Seconds(), p50: at(0.50), p99: at(0.99)}
}

// measureSign serves key on socket and calls Sign from n goroutines over one connection.
func measureSign(ctx context.Context, socket string, key crypto.Signer, n int, d time.Duration) (latencies, error) {
	ks, err := signer.NewStaticKeySet(key)
	if err != nil {
		return latencies{}, err
	}
	srv, err := signer.NewServer(signer.Config{Keys: ks, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return latencies{}, err
	}
	lis, err := signer.Listen(socket)
	if err != nil {
		return latencies{}, err
	}
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, lis) }()
	defer func() { cancel(); <-served }()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return latencies{}, err
	}
	defer conn.Close()
	client := externaljwtv1.NewExternalJWTSignerClient(conn)
	req := &externaljwtv1.SignJWTRequest{Claims: claims()}
	// Warm up the connection and the key.
	if _, err := client.Sign(ctx, req); err != nil {
		return latencies{}, err
	}
	took, elapsed, err := callUntil(ctx, n, d, func() error {
		_, err := client.Sign(ctx, req)
		return err
	})
	if err != nil {
		return latencies{}, err
	}
	if len(took) == 0 {
		return latencies{}, errors.New("no call completed")
	}
	return summarize(took, elapsed), nil
}

// callUntil runs call from n goroutines until d has passed (or ctx ends) and returns every call's
// latency and the time it all took; the first error stops its goroutine and is returned.
func callUntil(ctx context.Context, n int, d time.Duration, call func() error) ([]time.Duration, time.Duration, error) {
	var (
		mu    sync.Mutex
		took  []time.Duration
		first atomic.Value
		wg    sync.WaitGroup
	)
	deadline := time.Now().Add(d)
	began := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			defer func() {
				mu.Lock()
				took = append(took, mine...)
				mu.Unlock()
			}()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t := time.Now()
				if err := call(); err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
				mine = append(mine, time.Since(t))
			}
		}()
	}
	wg.Wait()
	err, _ := first.Load().(error)
	return took, time.Since(began), err
}

// measureTokenRequests compares kube-apiserver's TokenRequest throughput with the signer and with
// the same key as a file.
func measureTokenRequests(ctx context.Context, work string, d time.Duration, rounds, callers int) error {
	bin, err := testcluster.BinDir(ctx, os.Stderr)
	if err != nil {
		return err
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})
	ks, err := signer.NewStaticKeySet(rsaKey)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	srv, err := signer.NewServer(signer.Config{Keys: ks, Logger: slog.New(slog.DiscardHandler), Registerer: reg})
	if err != nil {
		return err
	}
	socket := filepath.Join(work, "signer.sock")
	lis, err := signer.Listen(socket)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, lis) }()
	defer func() { cancel(); <-served }()

	fmt.Printf("\nTokenRequest through kube-apiserver (%d callers, %d rounds of %s, alternating; RS256)\n", callers, rounds, d)
	type config struct {
		name string
		cfg  testcluster.Config
	}
	configs := []config{
		{"signer", testcluster.Config{ServiceAccountSigningEndpoint: socket}},
		{"key file", testcluster.Config{SigningKeyPEM: keyPEM}},
	}
	rates := map[string][]float64{}
	var fetchPerMin []float64
	for round := range rounds {
		order := configs
		if round%2 == 1 {
			order = []config{configs[1], configs[0]}
		}
		for _, c := range order {
			cfg := c.cfg
			cfg.BinDir, cfg.WorkDir = bin, filepath.Join(work, fmt.Sprintf("cluster-%d-%d", round, len(rates[c.name])))
			cfg.ServiceAccountIssuers = []string{"https://oidc.example.test/bench"}
			fetchBefore := callCount(reg, "FetchKeys")
			began := time.Now()
			rate, err := tokenRound(ctx, cfg, d, callers)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", c.name, round+1, err)
			}
			if c.name == "signer" {
				fetchPerMin = append(fetchPerMin, (callCount(reg, "FetchKeys")-fetchBefore)/time.Since(began).Minutes())
			}
			rates[c.name] = append(rates[c.name], rate)
			fmt.Printf("  round %d  %-8s %8.0f tokens/s\n", round+1, c.name, rate)
		}
	}
	med := func(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	ratio := med(rates["signer"]) / med(rates["key file"])
	verdict := "PASS"
	if ratio < 0.95 {
		verdict = "MISS"
	}
	fmt.Printf("  median: signer %.0f tokens/s, key file %.0f tokens/s, ratio %.3f (target ≥ 0.95: %s)\n", med(rates["signer"]), med(rates["key file"]), ratio, verdict)
	fmt.Printf("  FetchKeys calls per minute while kube-apiserver ran against the signer (start-up included): median %.1f\n", med(fetchPerMin))
	return nil
}

// callCount is kube_oidc_issuer_signer_calls_total summed over the codes of method.
func callCount(reg *prometheus.Registry, method string) float64 {
	mfs, _ := reg.Gather()
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "kube_oidc_issuer_signer_calls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "method" && l.GetValue() == method {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// tokenRound starts a cluster, then mints tokens from callers goroutines for d.
func tokenRound(ctx context.Context, cfg testcluster.Config, d time.Duration, callers int) (float64, error) {
	cluster, err := testcluster.Start(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer cluster.Stop()
	rc := cluster.RESTConfig()
	rc.QPS, rc.Burst = -1, 0 // no client-side rate limit: measure the server
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return 0, err
	}
	const ns, sa = "bench", "bench"
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return 0, err
	}
	if _, err := kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		return 0, err
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"sts.amazonaws.com"}}}
	mint := func() error {
		_, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, req, metav1.CreateOptions{})
		return err
	}
	for range 20 { // warm-up
		if err := mint(); err != nil {
			return 0, err
		}
	}
	took, elapsed, err := callUntil(ctx, callers, d, mint)
	if err != nil {
		return 0, err
	}
	return float64(len(took)) / elapsed.Seconds(), nil
}

func newKey(alg string) (crypto.Signer, error) {
	if alg == "ES256" {
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return rsa.GenerateKey(rand.Reader, 2048)
}

// claims are what kube-apiserver sends for a typical bound token.
func claims() string {
	now := time.Now().Unix()
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil,
		`{"aud":["sts.amazonaws.com"],"exp":%d,"iat":%d,"iss":"https://oidc.example.test/bench","jti":"0f8e6c1a-1b2c-4d5e-8f90-a1b2c3d4e5f6","kubernetes.io":{"namespace":"bench","serviceaccount":{"name":"bench","uid":"5b3c6a4e-7d8f-4a1b-9c2d-3e4f5a6b7c8d"}},"nbf":%d,"sub":"system:serviceaccount:bench:bench"}`,
		now+3600, now, now))
}
