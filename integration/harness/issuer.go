// Package harness starts the real kube-oidc-issuer binary for end-to-end tests, `make run` and the
// load benchmark, next to the real kube-apiserver and etcd of internal/testcluster.
package harness

import (
	"bytes"
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

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/freeport"
)

// BuildIssuer compiles cmd/kube-oidc-issuer into dir and returns the binary's path. repoRoot is the
// directory holding go.mod.
func BuildIssuer(ctx context.Context, repoRoot, dir string, race bool) (string, error) {
	out := filepath.Join(dir, "kube-oidc-issuer")
	// grpcnotrace as the Makefile builds it (GO_TAGS): without it the binary is 60 % larger and
	// starts with ~14 MiB more resident memory, which the flood test's memory bound would see.
	args := []string{"build", "-tags", "grpcnotrace", "-o", out}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/kube-oidc-issuer")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = repoRoot
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building kube-oidc-issuer: %w: %s", err, stderr.String())
	}
	return out, nil
}

// FreePort returns a loopback TCP port outside the kernel's ephemeral range that no other caller in
// this process has been given (see internal/freeport for why).
func FreePort() (int, error) { return freeport.Take() }

// Issuer is a running `kube-oidc-issuer serve` process.
type Issuer struct {
	cmd          *exec.Cmd
	logPath      string
	InternalURL  string // http://127.0.0.1:PORT of the internal listener
	PublicAddr   string // 127.0.0.1:PORT of the public listener
	done         chan struct{}
	waitErr      error
	stopOnce     sync.Once
	internalHTTP *http.Client
}

// IssuerConfig says how to start the issuer. Args are passed to `serve` as they are; the listener
// flags are added from PublicPort and InternalPort.
type IssuerConfig struct {
	Binary       string
	Args         []string
	Env          []string // added to the current environment
	PublicPort   int
	InternalPort int
	LogPath      string
}

// StartIssuer starts the process and waits until its internal listener answers /healthz.
func StartIssuer(ctx context.Context, cfg IssuerConfig) (*Issuer, error) {
	logFile, err := os.Create(cfg.LogPath)
	if err != nil {
		return nil, fmt.Errorf("creating issuer log: %w", err)
	}
	args := append([]string{"serve",
		"--listen", "127.0.0.1:" + strconv.Itoa(cfg.PublicPort),
		"--internal-listen", "127.0.0.1:" + strconv.Itoa(cfg.InternalPort),
		"--log-format", "text",
	}, cfg.Args...)
	cmd := exec.Command(cfg.Binary, args...)
	cmd.Env = append(os.Environ(), cfg.Env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting kube-oidc-issuer: %w", err)
	}
	i := &Issuer{
		cmd:          cmd,
		logPath:      cfg.LogPath,
		InternalURL:  "http://127.0.0.1:" + strconv.Itoa(cfg.InternalPort),
		PublicAddr:   "127.0.0.1:" + strconv.Itoa(cfg.PublicPort),
		done:         make(chan struct{}),
		internalHTTP: &http.Client{Timeout: 2 * time.Second},
	}
	go func() {
		i.waitErr = cmd.Wait()
		logFile.Close()
		close(i.done)
	}()
	if err := i.waitFor(ctx, "/healthz", 30*time.Second); err != nil {
		_ = i.Stop()
		return nil, err
	}
	return i, nil
}

// WaitReady waits until /readyz answers 200: every key source delivered keys and documents are
// published.
func (i *Issuer) WaitReady(ctx context.Context, timeout time.Duration) error {
	return i.waitFor(ctx, "/readyz", timeout)
}

func (i *Issuer) waitFor(ctx context.Context, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, i.InternalURL+path, nil)
		resp, err := i.internalHTTP.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		select {
		case <-i.done:
			return fmt.Errorf("kube-oidc-issuer exited (%v) before %s was OK; log:\n%s", i.waitErr, path, i.LogTail(4000))
		case <-ctx.Done():
			return fmt.Errorf("kube-oidc-issuer %s not OK after %s (last: %s); log:\n%s", path, timeout, last, i.LogTail(4000))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Pid is the process ID.
func (i *Issuer) Pid() int { return i.cmd.Process.Pid }

// LogTail returns the last n bytes of the process's log.
func (i *Issuer) LogTail(n int) string {
	b, err := os.ReadFile(i.logPath)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Log returns the whole log.
func (i *Issuer) Log() string { return i.LogTail(1 << 30) }

// Stop sends SIGTERM (the graceful path production uses), then SIGKILL after 10 s. It returns the
// process's exit error if it did not exit cleanly on SIGTERM.
func (i *Issuer) Stop() error {
	var err error
	i.stopOnce.Do(func() {
		_ = syscall.Kill(-i.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-i.done:
			err = i.waitErr
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-i.cmd.Process.Pid, syscall.SIGKILL)
			<-i.done
			err = errors.New("kube-oidc-issuer did not stop within 10s of SIGTERM")
		}
	})
	return err
}

// HTTPClient returns a client that trusts only caPEM, as a relying party configured with the
// issuer's CA would.
func HTTPClient(caPEM []byte) (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no CA certificate in PEM")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, nil
}
