// Command benchmirror is `make bench-mirror`: it measures how long a change of the signing-key
// Secret takes to reach S3. A real kube-apiserver holds the Secret, `kube-oidc-issuer serve
// --mirror s3://...` watches it, and the benchmark polls both mirrored objects with anonymous GETs
// (what a relying party does) until they reflect the new key. Each round swaps between an RSA and
// an ECDSA key, so both the JWKS and the discovery document (its algorithm list) change. It runs
// against moto_server and MinIO and prints min/p50/p90/max per store.
package main

import (
	"context"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
)

const (
	namespace = "bench"
	secret    = "bench-sa"
	bucket    = "oidc-bench"
	issuerURL = "https://oidc.example.com/bench" // a custom domain in front of the bucket
	prefix    = "bench/"
	target    = time.Second
	pollEvery = 5 * time.Millisecond
)

type key struct {
	priv, pub []byte
	kid, alg  string
}

func main() {
	rounds := flag.Int("rounds", 20, "Secret changes per store")
	stores := flag.String("stores", "moto,minio", "comma-separated: moto, minio")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *rounds, strings.Split(*stores, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "benchmirror:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, rounds int, stores []string) error {
	if rounds < 2 {
		return errors.New("-rounds must be at least 2")
	}
	work, err := os.MkdirTemp("", "koi-bench-mirror-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	root, err := testcluster.RepoRoot()
	if err != nil {
		return err
	}
	names := []string{"kube-apiserver", "etcd"}
	if slices.Contains(stores, "minio") {
		names = append(names, "minio")
	}
	binDir, err := testcluster.BuildBinaries(ctx, os.Stderr, names...)
	if err != nil {
		return err
	}
	issuerBin, err := harness.BuildIssuer(ctx, root, work, false)
	if err != nil {
		return err
	}
	keys, err := newKeys()
	if err != nil {
		return err
	}

	cluster, err := testcluster.Start(ctx, testcluster.Config{
		BinDir: binDir, WorkDir: filepath.Join(work, "cluster"),
		ServiceAccountIssuers: []string{issuerURL}, SigningKeyPEM: keys[0].priv,
	})
	if err != nil {
		return err
	}
	defer cluster.Stop()
	kube, err := kubernetes.NewForConfig(cluster.RESTConfig())
	if err != nil {
		return err
	}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}

	fmt.Printf("\nSecret change → both objects updated in S3 (anonymous GETs polled every %s), %d rounds per store, target p50 ≤ %s\n\n", pollEvery, rounds, target)
	fmt.Printf("%-6s %8s %8s %8s %8s %8s   %s\n", "store", "min", "p50", "p90", "max", "mean", "issuer's own publish time (HEAD×2 + PUT×2), mean")
	failed := false
	for _, name := range stores {
		res, err := benchStore(ctx, name, work, binDir, issuerBin, cluster, kube, keys, rounds)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		slices.Sort(res.took)
		var sum time.Duration
		for _, d := range res.took {
			sum += d
		}
		p := func(q float64) time.Duration { return res.took[int(q*float64(len(res.took)-1)+0.5)] }
		fmt.Printf("%-6s %8s %8s %8s %8s %8s   %s\n", name, ms(res.took[0]), ms(p(0.5)), ms(p(0.9)), ms(res.took[len(res.took)-1]), ms(sum/time.Duration(len(res.took))), ms(res.publishMean))
		failed = failed || p(0.5) > target
	}
	fmt.Println()
	if failed {
		return fmt.Errorf("p50 above the %s target", target)
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond)) }

type result struct {
	took        []time.Duration
	publishMean time.Duration
}

// store is one S3 implementation under test.
type store struct {
	endpoint string
	aws      aws.Config
	env      []string
	stop     func() error
}

func startStore(ctx context.Context, name, work, binDir string) (*store, error) {
	switch name {
	case "moto":
		m, err := harness.StartMoto(ctx, harness.MotoConfig{LogPath: filepath.Join(work, "moto.log")})
		if err != nil {
			return nil, err
		}
		return &store{endpoint: m.URL, aws: m.AWSConfig(), stop: m.Stop,
			env: []string{"AWS_ACCESS_KEY_ID=" + harness.MotoAccessKeyID, "AWS_SECRET_ACCESS_KEY=" + harness.MotoSecretAccessKey, "AWS_REGION=" + harness.MotoRegion}}, nil
	case "minio":
		m, err := harness.StartMinIO(ctx, harness.MinIOConfig{Binary: filepath.Join(binDir, "minio"), DataDir: filepath.Join(work, "minio-data"), LogPath: filepath.Join(work, "minio.log")})
		if err != nil {
			return nil, err
		}
		return &store{endpoint: m.URL, aws: m.AWSConfig(), stop: m.Stop,
			env: []string{"AWS_ACCESS_KEY_ID=" + harness.MinIORootUser, "AWS_SECRET_ACCESS_KEY=" + harness.MinIORootPassword, "AWS_REGION=" + harness.MinIORegion}}, nil
	}
	return nil, fmt.Errorf("unknown store %q (moto, minio)", name)
}

func benchStore(ctx context.Context, name, work, binDir, issuerBin string, cluster *testcluster.Cluster, kube kubernetes.Interface, keys []key, rounds int) (result, error) {
	st, err := startStore(ctx, name, work, binDir)
	if err != nil {
		return result{}, err
	}
	defer st.stop()
	admin := s3.NewFromConfig(st.aws, func(o *s3.Options) { o.UsePathStyle = true })
	if _, err := admin.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		return result{}, err
	}
	secrets := kube.CoreV1().Secrets(namespace)
	_ = secrets.Delete(ctx, secret, metav1.DeleteOptions{})
	if _, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret}, Type: "cluster.x-k8s.io/secret",
		Data: map[string][]byte{"tls.crt": keys[0].pub, "tls.key": keys[0].priv}}, metav1.CreateOptions{}); err != nil {
		return result{}, err
	}
	ports := make([]int, 2)
	for i := range ports {
		if ports[i], err = harness.FreePort(); err != nil {
			return result{}, err
		}
	}
	issuer, err := harness.StartIssuer(ctx, harness.IssuerConfig{
		Binary: issuerBin,
		Args: []string{"--issuer-url", issuerURL, "--secret", namespace + "/" + secret, "--kubeconfig", cluster.KubeconfigPath(),
			"--mirror", "s3://" + bucket, "--s3-endpoint", st.endpoint, "--s3-path-style", "--s3-manage-bucket-policy", "--log-level", "warn"},
		Env:        append([]string{"AWS_CA_BUNDLE=", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}, st.env...),
		PublicPort: ports[0], InternalPort: ports[1], LogPath: filepath.Join(work, "issuer-"+name+".log"),
	})
	if err != nil {
		return result{}, err
	}
	defer issuer.Stop()
	if err := issuer.WaitReady(ctx, 30*time.Second); err != nil {
		return result{}, err
	}
	client := &http.Client{Timeout: 5 * time.Second}
	if _, err := waitMirrored(ctx, client, st.endpoint, keys[0]); err != nil {
		return result{}, fmt.Errorf("initial mirror: %w\n%s", err, issuer.LogTail(2000))
	}

	var res result
	for i := 1; i <= rounds; i++ {
		k := keys[i%len(keys)]
		sec, err := secrets.Get(ctx, secret, metav1.GetOptions{})
		if err != nil {
			return result{}, err
		}
		sec.Data = map[string][]byte{"tls.crt": k.pub, "tls.key": k.priv}
		start := time.Now()
		if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
			return result{}, err
		}
		if _, err := waitMirrored(ctx, client, st.endpoint, k); err != nil {
			return result{}, fmt.Errorf("round %d: %w\n%s", i, err, issuer.LogTail(2000))
		}
		res.took = append(res.took, time.Since(start))
	}
	res.publishMean, err = meanPublish(ctx, client, issuer.InternalURL)
	return res, err
}

// waitMirrored polls both objects until the JWKS holds exactly k and the discovery document
// advertises exactly k's algorithm.
func waitMirrored(ctx context.Context, client *http.Client, endpoint string, k key) (time.Duration, error) {
	start := time.Now()
	base := endpoint + "/" + bucket + "/" + prefix
	var last string
	for time.Since(start) < 30*time.Second {
		var jwks struct {
			Keys []struct{ Kid string } `json:"keys"`
		}
		var disco struct {
			Algs []string `json:"id_token_signing_alg_values_supported"`
		}
		errJ := getJSON(ctx, client, base+"openid/v1/jwks", &jwks)
		errD := getJSON(ctx, client, base+".well-known/openid-configuration", &disco)
		if errJ == nil && errD == nil && len(jwks.Keys) == 1 && jwks.Keys[0].Kid == k.kid && slices.Equal(disco.Algs, []string{k.alg}) {
			return time.Since(start), nil
		}
		last = fmt.Sprint(errJ, errD, jwks, disco)
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(pollEvery):
		}
	}
	return 0, fmt.Errorf("objects did not reflect key %s within 30s (last: %s)", k.kid, last)
}

func getJSON(ctx context.Context, client *http.Client, url string, v any) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.Unmarshal(body, v)
}

// meanPublish reads the issuer's mean successful publication time from its metrics.
func meanPublish(ctx context.Context, client *http.Client, internalURL string) (time.Duration, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, internalURL+"/metrics", nil)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var sum, count float64
	for _, l := range strings.Split(string(body), "\n") {
		if !strings.Contains(l, `result="success"`) {
			continue
		}
		fields := strings.Fields(l)
		switch {
		case strings.HasPrefix(l, "kube_oidc_issuer_mirror_publish_duration_seconds_sum{"):
			fmt.Sscan(fields[len(fields)-1], &sum)
		case strings.HasPrefix(l, "kube_oidc_issuer_mirror_publish_duration_seconds_count{"):
			fmt.Sscan(fields[len(fields)-1], &count)
		}
	}
	if count == 0 {
		return 0, errors.New("no successful publication in the issuer's metrics")
	}
	return time.Duration(sum / count * float64(time.Second)), nil
}

// newKeys returns keys alternating between RSA and ECDSA, so that consecutive rounds change
// both documents.
func newKeys() ([]key, error) {
	var out []key
	for i := range 4 {
		var priv, pub []byte
		var err error
		alg := "RS256"
		if i%2 == 1 {
			alg = "ES256"
			priv, pub, err = pki.GenerateECDSAKeyPEM(elliptic.P256())
		} else {
			priv, pub, err = pki.GenerateRSAKeyPEM(2048)
		}
		if err != nil {
			return nil, err
		}
		b, _ := pem.Decode(pub)
		if b == nil {
			return nil, errors.New("generated public key is not PEM")
		}
		sum := sha256.Sum256(b.Bytes)
		out = append(out, key{priv: priv, pub: pub, kid: base64.RawURLEncoding.EncodeToString(sum[:]), alg: alg})
	}
	return out, nil
}
