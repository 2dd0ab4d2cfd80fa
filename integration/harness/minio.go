package harness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Credentials of the MinIO root user the harness starts MinIO with.
const (
	MinIORootUser     = "koi-minio-root"
	MinIORootPassword = "koi-minio-root-password"
	MinIORegion       = "us-east-1"
)

// MinIOConfig says how to start MinIO (built by hack/build-test-binaries.sh minio).
type MinIOConfig struct {
	// Binary is the minio executable. Required.
	Binary string
	// DataDir holds MinIO's data; it survives Stop, so a restart on the same directory and port
	// keeps buckets, objects and policies. Required.
	DataDir string
	// Port is the S3 API port on 127.0.0.1; zero picks a free one.
	Port int
	// TLS, when set, makes MinIO serve HTTPS with this certificate chain and key (PEM), and trust
	// CAPEM for its own outbound requests (the OpenID configuration URL).
	CertPEM, KeyPEM, CAPEM []byte
	// Env is added to MinIO's environment (MINIO_IDENTITY_OPENID_*, ...).
	Env []string
	// LogPath receives MinIO's output (appended across restarts). Required.
	LogPath string
}

// MinIO is a running MinIO server: a real S3 (public access only through bucket policies) and a
// real OIDC token verifier (STS AssumeRoleWithWebIdentity).
type MinIO struct {
	// URL is http(s)://127.0.0.1:PORT.
	URL  string
	Port int

	cfg      MinIOConfig
	certsDir string
	client   *http.Client

	mu   sync.Mutex
	proc *minioProcess
}

type minioProcess struct {
	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

// StartMinIO starts MinIO and waits until it is ready to serve S3 requests.
func StartMinIO(ctx context.Context, cfg MinIOConfig) (*MinIO, error) {
	if cfg.Binary == "" || cfg.DataDir == "" || cfg.LogPath == "" {
		return nil, errors.New("MinIOConfig needs Binary, DataDir and LogPath")
	}
	if cfg.Port == 0 {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		cfg.Port = p
	}
	m := &MinIO{cfg: cfg, Port: cfg.Port, client: &http.Client{Timeout: 5 * time.Second}}
	scheme := "http"
	// An empty certs directory keeps MinIO from reading ~/.minio/certs.
	m.certsDir = filepath.Join(filepath.Dir(cfg.LogPath), "minio-certs-"+strconv.Itoa(cfg.Port))
	if err := os.MkdirAll(filepath.Join(m.certsDir, "CAs"), 0o700); err != nil {
		return nil, fmt.Errorf("creating MinIO certs dir: %w", err)
	}
	if cfg.CertPEM != nil {
		scheme = "https"
		files := map[string][]byte{"public.crt": cfg.CertPEM, "private.key": cfg.KeyPEM, "CAs/test-ca.crt": cfg.CAPEM}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(m.certsDir, name), data, 0o600); err != nil {
				return nil, fmt.Errorf("writing MinIO %s: %w", name, err)
			}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.CAPEM) {
			return nil, errors.New("MinIOConfig.CAPEM holds no certificate")
		}
		m.client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	m.URL = scheme + "://127.0.0.1:" + strconv.Itoa(cfg.Port)
	if err := m.start(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *MinIO) start(ctx context.Context) error {
	logFile, err := os.OpenFile(m.cfg.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening MinIO log: %w", err)
	}
	defer logFile.Close()
	consolePort, err := FreePort()
	if err != nil {
		return err
	}
	cmd := exec.Command(m.cfg.Binary, "server",
		"--address", "127.0.0.1:"+strconv.Itoa(m.cfg.Port),
		"--console-address", "127.0.0.1:"+strconv.Itoa(consolePort),
		"--certs-dir", m.certsDir,
		m.cfg.DataDir)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+MinIORootUser,
		"MINIO_ROOT_PASSWORD="+MinIORootPassword,
		"MINIO_REGION="+MinIORegion,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
	)
	if m.cfg.CAPEM != nil {
		cmd.Env = append(cmd.Env, "SSL_CERT_FILE="+filepath.Join(m.certsDir, "CAs", "test-ca.crt"))
	}
	cmd.Env = append(cmd.Env, m.cfg.Env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting MinIO: %w", err)
	}
	p := &minioProcess{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	m.mu.Lock()
	m.proc = p
	m.mu.Unlock()
	if err := m.waitReady(ctx, p, 60*time.Second); err != nil {
		_ = p.stop()
		return err
	}
	return nil
}

// waitReady polls until MinIO's object layer serves requests.
func (m *MinIO) waitReady(ctx context.Context, p *minioProcess, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := "no answer"
	for {
		// /minio/health/ready answers 200 before the object layer is initialised (requests then
		// fail with XMinioServerNotInitialized); /minio/health/cluster only once it serves I/O.
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.URL+"/minio/health/cluster", nil)
		resp, err := m.client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-p.done:
			return fmt.Errorf("MinIO exited (%v) before it was ready; log:\n%s", p.waitErr, m.LogTail(3000))
		case <-ctx.Done():
			return fmt.Errorf("MinIO not ready after %s (last: %s); log:\n%s", timeout, last, m.LogTail(3000))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// AWSConfig returns an SDK configuration with the root user's credentials and m.URL as the
// endpoint. S3 clients built from it need UsePathStyle. HTTPS MinIO also needs an HTTP client
// trusting the test CA (HTTPClient).
func (m *MinIO) AWSConfig() aws.Config {
	return aws.Config{
		Region:       MinIORegion,
		Credentials:  credentials.NewStaticCredentialsProvider(MinIORootUser, MinIORootPassword, ""),
		BaseEndpoint: aws.String(m.URL),
		HTTPClient:   m.client,
	}
}

// HTTPClient returns a client that trusts MinIO's certificate (no credentials: anonymous).
func (m *MinIO) HTTPClient() *http.Client { return m.client }

// Restart stops MinIO and starts it again on the same port and data directory, with env
// replacing MinIOConfig.Env (nil keeps it).
func (m *MinIO) Restart(ctx context.Context, env []string) error {
	if err := m.Stop(); err != nil {
		return err
	}
	if env != nil {
		m.cfg.Env = env
	}
	return m.start(ctx)
}

// Start starts a stopped MinIO again with its configuration (same port and data).
func (m *MinIO) Start(ctx context.Context) error {
	m.mu.Lock()
	running := m.proc != nil
	m.mu.Unlock()
	if running {
		return errors.New("MinIO is running")
	}
	return m.start(ctx)
}

// Stop stops MinIO (SIGTERM to its process group, SIGKILL after 10 s). Its data stays.
func (m *MinIO) Stop() error {
	m.mu.Lock()
	p := m.proc
	m.proc = nil
	m.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.stop()
}

func (p *minioProcess) stop() error {
	p.stopOnce.Do(func() {
		pgid := p.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.stopErr = errors.New("MinIO did not stop within 10s of SIGTERM; killed")
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	})
	return p.stopErr
}

// LogTail returns the last n bytes of MinIO's log.
func (m *MinIO) LogTail(n int) string { return tailOf(m.cfg.LogPath, n) }
