package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage/storagetest"
)

var minioOnce struct {
	sync.Once
	bin string
	err error
}

// minioBinary builds MinIO into the test-binary cache the first time (several minutes cold) and
// returns its path.
func minioBinary(t *testing.T) string {
	t.Helper()
	skipIfShort(t)
	minioOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		start := time.Now()
		dir, err := testcluster.BuildBinaries(ctx, os.Stderr, "minio")
		if err != nil {
			minioOnce.err = err
			return
		}
		minioOnce.bin = filepath.Join(dir, "minio")
		fmt.Fprintf(os.Stderr, "integration: MinIO ready in %s\n", time.Since(start).Round(time.Millisecond))
	})
	if minioOnce.err != nil {
		t.Fatalf("building MinIO: %v", minioOnce.err)
	}
	return minioOnce.bin
}

// s3Store is one running S3 implementation with an admin client and an anonymous HTTP client.
type s3Store struct {
	name      string
	endpoint  string // http(s)://127.0.0.1:PORT
	admin     *s3.Client
	anonymous *http.Client
	awsEnv    []string // AWS_* variables that let a process use the store's admin credentials
	caFile    string   // for AWS_CA_BUNDLE: the CA of an HTTPS store, else ""
	// racyReads: the store may answer a GET that overlaps a PUT of the same key with a 500.
	// moto 5.2.1 does (its in-memory object is replaced under the reader: seen in CI as a
	// Flask "500 Internal Server Error" page); a real S3 and MinIO never do. Such a GET is
	// repeated a few times; any other failure, and a partial body, still fail the test.
	racyReads bool
}

// startMotoStore starts a moto_server for the test.
func startMotoStore(t *testing.T) *s3Store {
	t.Helper()
	skipIfShort(t)
	m := harness.StartMotoT(t, harness.MotoConfig{})
	return &s3Store{
		name:      "moto",
		racyReads: true,
		endpoint:  m.URL,
		admin:     s3.NewFromConfig(m.AWSConfig(), func(o *s3.Options) { o.UsePathStyle = true }),
		anonymous: &http.Client{Timeout: 10 * time.Second},
		awsEnv: []string{
			"AWS_ACCESS_KEY_ID=" + harness.MotoAccessKeyID, "AWS_SECRET_ACCESS_KEY=" + harness.MotoSecretAccessKey,
			"AWS_REGION=" + harness.MotoRegion, "AWS_CA_BUNDLE=",
		},
	}
}

// minioStore starts MinIO for the test; with ca, it serves HTTPS with a certificate from ca.
func startMinIOStore(t *testing.T, ca *pki.CA, env []string) (*s3Store, *harness.MinIO) {
	t.Helper()
	bin := minioBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	caFile := ""
	cfg := harness.MinIOConfig{Binary: bin, DataDir: filepath.Join(dir, "data"), LogPath: filepath.Join(dir, "minio.log"), Env: env}
	if ca != nil {
		leaf, err := ca.IssueServer("127.0.0.1", "localhost")
		if err != nil {
			t.Fatal(err)
		}
		cfg.CertPEM, cfg.KeyPEM, cfg.CAPEM = leaf.CertPEM, leaf.KeyPEM, ca.CertPEM()
		caFile = writePEM(t, dir, "ca.crt", ca.CertPEM())
	}
	m, err := harness.StartMinIO(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("MinIO log:\n%s", m.LogTail(4000))
		}
		if err := m.Stop(); err != nil {
			t.Errorf("stopping MinIO: %v", err)
		}
	})
	return &s3Store{
		name:      "MinIO",
		endpoint:  m.URL,
		admin:     s3.NewFromConfig(m.AWSConfig(), func(o *s3.Options) { o.UsePathStyle = true }),
		anonymous: m.HTTPClient(),
		awsEnv: []string{
			"AWS_ACCESS_KEY_ID=" + harness.MinIORootUser, "AWS_SECRET_ACCESS_KEY=" + harness.MinIORootPassword,
			"AWS_REGION=" + harness.MinIORegion, "AWS_CA_BUNDLE=" + caFile,
		},
		caFile: caFile,
	}, m
}

func (s *s3Store) createBucket(t *testing.T, bucket string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.admin.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("%s: creating bucket %s: %v", s.name, bucket, err)
	}
}

// objectURL is the path-style URL of an object, as an anonymous relying party fetches it.
func (s *s3Store) objectURL(bucket, key string) string {
	return s.endpoint + "/" + bucket + "/" + key
}

// get fetches an object anonymously (no credentials, no signature).
func (s *s3Store) get(ctx context.Context, bucket, key string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.objectURL(bucket, key), nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := s.anonymous.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// fetcher reads objects as a relying party does: an anonymous GET. 403 and 404 both mean "not
// there": S3 answers 403 for a missing key when the reader may not list the bucket.
func (s *s3Store) fetcher(bucket, prefix string) func(ctx context.Context, key string) (storagetest.Fetched, error) {
	return func(ctx context.Context, key string) (storagetest.Fetched, error) {
		resp, body, err := s.get(ctx, bucket, prefix+key)
		for attempt := 1; err == nil && s.racyReads && resp.StatusCode == http.StatusInternalServerError && attempt < 4; attempt++ {
			time.Sleep(10 * time.Millisecond)
			resp, body, err = s.get(ctx, bucket, prefix+key)
		}
		if err != nil {
			return storagetest.Fetched{}, err
		}
		switch resp.StatusCode {
		case http.StatusOK:
			return storagetest.Fetched{Found: true, Body: body, Headers: true,
				ContentType: resp.Header.Get("Content-Type"), CacheControl: resp.Header.Get("Cache-Control")}, nil
		case http.StatusNotFound, http.StatusForbidden:
			return storagetest.Fetched{}, nil
		}
		return storagetest.Fetched{}, fmt.Errorf("GET %s: %s: %s", s.objectURL(bucket, prefix+key), resp.Status, body)
	}
}

// publicReadPolicy grants anonymous s3:GetObject on everything under prefix: the setup for the
// conformance suite, whose reader is anonymous.
func publicReadPolicy(bucket, prefix string) string {
	return fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Sid":"TestRead","Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::%s/%s*"}]}`, bucket, prefix)
}

// writePEM writes data to a new file in dir and returns its path.
func writePEM(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	writeFile(t, p, data)
	return p
}

// metricValue returns the value of one series (name{labels}) in a Prometheus text exposition, or "".
func metricValue(metrics, series string) string {
	for _, l := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			return v
		}
	}
	return ""
}
