package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Credentials and account moto_server accepts and reports. moto checks no signature, but the SDK
// needs some credentials to sign with.
const (
	MotoAccessKeyID     = "testing"
	MotoSecretAccessKey = "testing"
	MotoRegion          = "us-east-1"
	MotoAccountID       = "123456789012"
)

// MotoConfig says how to start moto_server. The zero value works when moto_server is on $PATH.
//
// Shared by every test that needs AWS emulation (the S3 mirror, IAM OIDC providers): extend it
// rather than starting moto_server elsewhere.
type MotoConfig struct {
	// Binary defaults to "moto_server" looked up on $PATH.
	Binary string
	// LogPath receives moto_server's output; empty means a temporary file removed by Stop.
	LogPath string
	// Env is added to the current environment.
	Env []string
	// StartTimeout bounds how long moto_server may take to print its address; zero means 30s.
	StartTimeout time.Duration
	// Port is the port on 127.0.0.1; zero lets moto_server pick one (-p 0). A test that restarts
	// moto_server (Restart) gives a port from FreePort: an ephemeral one may be taken by an
	// outgoing connection while moto_server is down.
	Port int
	// IAMClientIDs runs moto_server through motoext/moto_server_ext.py, which implements the IAM
	// actions moto 5.2.1 answers with HTTP 500 (AddClientIDToOpenIDConnectProvider,
	// RemoveClientIDFromOpenIDConnectProvider) on moto's own provider state, with the Python that
	// runs moto_server.
	IAMClientIDs bool
}

// Moto is a running moto_server on 127.0.0.1 with an ephemeral port, in its own process group and
// (on Linux) killed by the kernel if the process that started it dies.
type Moto struct {
	// URL is http://127.0.0.1:PORT, the endpoint for every emulated AWS service.
	URL  string
	Port int

	cfg      MotoConfig // as given to StartMoto, for Restart
	cmd      *exec.Cmd
	logPath  string
	tempLog  bool
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
	stopErr  error
	http     *http.Client
}

// motoListening matches the line werkzeug prints once it listens: " * Running on http://127.0.0.1:PORT".
var motoListening = regexp.MustCompile(`Running on http://127\.0\.0\.1:(\d+)`)

// StartMoto starts `moto_server -H 127.0.0.1 -p 0` (or MotoConfig.Port) and returns once it
// listens. The port is read from its output, so parallel tests never race for a port.
func StartMoto(ctx context.Context, cfg MotoConfig) (*Moto, error) {
	bin := cfg.Binary
	if bin == "" {
		bin = "moto_server"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("finding moto_server (pip install 'moto[server]'): %w", err)
	}
	timeout := cfg.StartTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	logPath, tempLog := cfg.LogPath, false
	if logPath == "" {
		f, err := os.CreateTemp("", "moto-*.log")
		if err != nil {
			return nil, fmt.Errorf("creating moto_server log: %w", err)
		}
		logPath, tempLog = f.Name(), true
		f.Close()
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening moto_server log: %w", err)
	}

	port := strconv.Itoa(cfg.Port)
	argv := []string{path, "-H", "127.0.0.1", "-p", port}
	if cfg.IAMClientIDs {
		if argv, err = motoExtArgv(ctx, path, port); err != nil {
			logFile.Close()
			return nil, err
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), cfg.Env...)
	cmd.Stdout = logFile
	pr, pw, err := os.Pipe()
	if err != nil {
		logFile.Close()
		return nil, fmt.Errorf("creating pipe for moto_server output: %w", err)
	}
	cmd.Stderr = pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("starting moto_server: %w", err)
	}
	pw.Close() // the child holds its own copy

	m := &Moto{cfg: cfg, cmd: cmd, logPath: logPath, tempLog: tempLog, done: make(chan struct{}), http: &http.Client{Timeout: 10 * time.Second}}
	portCh := make(chan int, 1)
	go func() {
		// Copy everything to the log, and report the port from the first matching line.
		defer logFile.Close()
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		found := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logFile, line)
			if !found {
				if mm := motoListening.FindStringSubmatch(line); mm != nil {
					p, _ := strconv.Atoi(mm[1])
					portCh <- p
					found = true
				}
			}
		}
		_, _ = io.Copy(logFile, pr)
	}()
	go func() {
		m.waitErr = cmd.Wait()
		close(m.done)
	}()

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case m.Port = <-portCh:
	case <-m.done:
		return nil, fmt.Errorf("moto_server exited (%v) before listening; log:\n%s", m.waitErr, tailOf(logPath, 2000))
	case <-timer.C:
		_ = m.Stop()
		return nil, fmt.Errorf("moto_server did not listen within %s; log:\n%s", timeout, tailOf(logPath, 2000))
	case <-ctx.Done():
		_ = m.Stop()
		return nil, fmt.Errorf("waiting for moto_server: %w", ctx.Err())
	}
	m.URL = "http://127.0.0.1:" + strconv.Itoa(m.Port)
	return m, nil
}

// AWSConfig returns an SDK configuration for moto: static credentials, MotoRegion, and every
// service's endpoint at m.URL. S3 clients built from it also need UsePathStyle.
func (m *Moto) AWSConfig() aws.Config {
	return aws.Config{
		Region:       MotoRegion,
		Credentials:  credentials.NewStaticCredentialsProvider(MotoAccessKeyID, MotoSecretAccessKey, ""),
		BaseEndpoint: aws.String(m.URL),
	}
}

// Reset wipes every emulated resource (POST /moto-api/reset), for tests sharing one moto_server.
func (m *Moto) Reset(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.URL+"/moto-api/reset", nil)
	if err != nil {
		return fmt.Errorf("resetting moto_server: %w", err)
	}
	resp, err := m.http.Do(req)
	if err != nil {
		return fmt.Errorf("resetting moto_server: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("resetting moto_server: HTTP %d", resp.StatusCode)
	}
	return nil
}

// LogTail returns the last n bytes of moto_server's output.
func (m *Moto) LogTail(n int) string { return tailOf(m.logPath, n) }

// Stop sends SIGTERM to moto_server's process group, then SIGKILL after 10 s, and waits for it.
// Safe to call more than once; all state is lost.
func (m *Moto) Stop() error {
	m.stopOnce.Do(func() {
		pgid := m.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(10 * time.Second):
			m.stopErr = errors.New("moto_server did not stop within 10s of SIGTERM; killed")
		}
		// Whatever is left of the group (werkzeug may fork a reloader) goes too.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-m.done
		if m.tempLog {
			_ = os.Remove(m.logPath)
		}
	})
	return m.stopErr
}

// tailOf returns the last n bytes of the file at path.
func tailOf(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// StartMotoT starts moto_server for a test, as cfg says (its log goes to a file in a new temporary
// directory unless cfg.LogPath is set), and stops it when the test ends, showing the end of its log
// if the test failed. It fails the test if moto_server does not start within a minute.
func StartMotoT(t testing.TB, cfg MotoConfig) *Moto {
	t.Helper()
	if cfg.LogPath == "" {
		cfg.LogPath = filepath.Join(t.TempDir(), "moto.log")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := StartMoto(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("moto_server log:\n%s", m.LogTail(4000))
		}
		if err := m.Stop(); err != nil {
			t.Errorf("stopping moto_server: %v", err)
		}
	})
	return m
}
