// Package testcluster runs a real etcd and kube-apiserver on 127.0.0.1 for integration tests and
// the local development stack. It is not tied to testing.T: callers pass a context and a logger
// and get errors back.
//
// Everything the cluster writes goes under Config.WorkDir, which the caller owns:
//
//	etcd/                            etcd data (survives RestartAPIServer and StopEtcd)
//	pki/ca.crt                       CA of the apiserver's serving certificate
//	pki/tls.crt, pki/tls.key         serving certificate (IP SAN 127.0.0.1, DNS localhost)
//	auth/tokens.csv                  --token-auth-file with the admin user (group system:masters)
//	serviceaccount/                  signing key and verification keys of the current apiserver
//	serviceaccount-extra-N/          the same for the Nth extra apiserver (StartAPIServer)
//	kubeconfig                       admin kubeconfig
//	logs/etcd.log                    etcd output
//	logs/kube-apiserver-N.log        output of the Nth kube-apiserver started by this Cluster
//	logs/kube-apiserver-extra-N.log  output of the Nth extra apiserver
//
// Children run in their own process groups and, on Linux, are killed by the kernel if the process
// that started them dies, so a crashed test leaves nothing behind. The package is Unix-only.
package testcluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/freeport"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
)

const (
	defaultStartTimeout    = 90 * time.Second
	defaultStopGracePeriod = 15 * time.Second
	// startAttempts bounds retries when a port picked as free was taken before the child bound it.
	startAttempts = 3
	logTailLines  = 40

	// AdminUser is the user name of the identity in RESTConfig and KubeconfigPath.
	AdminUser = "admin"
	// AdminGroup is the group of that identity: unrestricted under RBAC.
	AdminGroup = "system:masters"
)

// Config describes the cluster to start.
type Config struct {
	// BinDir holds the kube-apiserver and etcd executables (see BinDir). Required.
	BinDir string
	// WorkDir receives etcd data, certificates, kubeconfig and logs. Required; the caller owns it
	// (for example t.TempDir()) and it must outlive the Cluster.
	WorkDir string

	// ServiceAccountIssuers are passed in order as repeated --service-account-issuer flags: the
	// first one is written into new tokens, all of them are accepted. The first is also the only
	// --api-audiences value, so it is the default audience of TokenRequest. Required.
	ServiceAccountIssuers []string
	// ServiceAccountJWKSURI is --service-account-jwks-uri, the jwks_uri of the apiserver's own
	// discovery document (must be https). Optional.
	ServiceAccountJWKSURI string
	// SigningKeyPEM is the private key (PKCS #1, PKCS #8 or SEC 1 PEM) that signs service-account
	// tokens. Required unless ServiceAccountSigningEndpoint is set. Its public half is always
	// published in the JWKS.
	SigningKeyPEM []byte
	// VerificationKeysPEM are extra keys (public or private PEM) that verify tokens and are
	// published in the JWKS, each passed as a --service-account-key-file after the signing key:
	// for instance the previous signing key during a rotation.
	VerificationKeysPEM [][]byte
	// ServiceAccountSigningEndpoint is the unix socket of an external JWT signer (KEP-740),
	// passed as --service-account-signing-endpoint: the signer signs tokens and supplies the
	// verification keys. kube-apiserver refuses it together with key files, so SigningKeyPEM and
	// VerificationKeysPEM must then be empty. The signer must be serving before the apiserver
	// starts: kube-apiserver fetches its keys during start-up.
	ServiceAccountSigningEndpoint string
	// ExtraAPIServerArgs are appended to the kube-apiserver command line, after ours.
	ExtraAPIServerArgs []string

	// Logger receives progress messages. Nil discards them.
	Logger *slog.Logger
	// StartTimeout bounds how long each component may take to become ready. Zero means 90s.
	StartTimeout time.Duration
	// StopGracePeriod is how long a component may take to exit after SIGTERM before it is killed.
	// Zero means 15s.
	StopGracePeriod time.Duration
}

// Cluster is a running etcd plus kube-apiserver. Its methods are safe for concurrent use.
type Cluster struct {
	paths       paths
	caPEM       []byte
	token       string
	etcdURL     string
	etcdArgs    []string // the running etcd's command line, for StartEtcd
	apiPort     int
	httpClient  *http.Client // trusts the serving CA, no credentials
	restartLock sync.Mutex   // serializes RestartAPIServer and Stop

	mu          sync.Mutex // guards the fields below
	cfg         Config
	etcd        *process
	apiserver   *process
	incarnation int          // how many kube-apiservers this Cluster has started
	extras      []*APIServer // extra apiservers not stopped yet, including ones still starting
	extraCount  int          // how many extra apiservers StartAPIServer has begun to start
	stopped     bool
	stopErr     error
}

type paths struct {
	etcdData, pki, caCert, tlsCert, tlsKey, tokenFile, saDir, certDir, kubeconfig, logs string
}

func newPaths(workDir string) paths {
	return paths{
		etcdData:   filepath.Join(workDir, "etcd"),
		pki:        filepath.Join(workDir, "pki"),
		caCert:     filepath.Join(workDir, "pki", "ca.crt"),
		tokenFile:  filepath.Join(workDir, "auth", "tokens.csv"),
		saDir:      filepath.Join(workDir, "serviceaccount"),
		certDir:    filepath.Join(workDir, "apiserver-cert-dir"),
		kubeconfig: filepath.Join(workDir, "kubeconfig"),
		logs:       filepath.Join(workDir, "logs"),
	}
}

// Start starts etcd and then kube-apiserver on free loopback ports and waits until the apiserver
// answers /readyz. ctx bounds only the start: the processes run until Stop. On failure everything
// started is stopped again, and the error carries the tail of the failing component's log.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	workDir, err := filepath.Abs(cfg.WorkDir)
	if err != nil {
		return nil, fmt.Errorf("resolving work directory: %w", err)
	}
	cfg.WorkDir = workDir
	c := &Cluster{cfg: cfg, paths: newPaths(workDir)}
	if err := c.prepareFiles(); err != nil {
		return nil, err
	}

	started := time.Now()
	if err := c.startEtcd(ctx); err != nil {
		return nil, err
	}
	if err := c.startFirstAPIServer(ctx); err != nil {
		_ = c.Stop()
		return nil, err
	}
	if err := c.writeKubeconfig(); err != nil {
		_ = c.Stop()
		return nil, err
	}
	cfg.Logger.Info("test cluster ready", "url", c.URL(), "took", time.Since(started).Round(time.Millisecond), "workDir", workDir)
	return c, nil
}

// RestartAPIServer stops kube-apiserver, lets mutate change a copy of the configuration, and
// starts kube-apiserver again on the same port against the same etcd, so all objects survive: the
// way an operator rotates the signing key or changes issuers. BinDir and WorkDir cannot change.
// If the new apiserver does not become ready, it is stopped and the error returned; the new
// configuration is kept, so another RestartAPIServer can correct it.
func (c *Cluster) RestartAPIServer(ctx context.Context, mutate func(*Config)) error {
	c.restartLock.Lock()
	defer c.restartLock.Unlock()

	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return errors.New("restarting kube-apiserver: cluster is stopped")
	}
	old := c.cfg
	next := old.clone()
	apiserver := c.apiserver
	c.mu.Unlock()

	if mutate != nil {
		mutate(&next)
	}
	next = next.withDefaults()
	if err := next.validate(); err != nil {
		return fmt.Errorf("restarting kube-apiserver: %w", err)
	}
	if next.BinDir != old.BinDir || next.WorkDir != old.WorkDir {
		return errors.New("restarting kube-apiserver: BinDir and WorkDir cannot change")
	}

	began := time.Now()
	if apiserver != nil {
		if err := apiserver.stop(old.StopGracePeriod); err != nil {
			return fmt.Errorf("restarting kube-apiserver: %w", err)
		}
	}
	c.mu.Lock()
	c.cfg = next
	c.apiserver = nil
	c.mu.Unlock()

	var err error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		var bindFailed bool
		bindFailed, err = c.startAPIServer(ctx, c.apiPort)
		if err == nil || !bindFailed {
			break
		}
		next.Logger.Warn("kube-apiserver port still busy, retrying", "port", c.apiPort, "attempt", attempt)
		select {
		case <-ctx.Done():
			return fmt.Errorf("restarting kube-apiserver: %w", context.Cause(ctx))
		case <-time.After(time.Second):
		}
	}
	if err != nil {
		return fmt.Errorf("restarting kube-apiserver: %w", err)
	}
	next.Logger.Info("kube-apiserver restarted", "url", c.URL(), "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// Stop stops the extra apiservers still running (StartAPIServer), kube-apiserver and then etcd:
// SIGTERM to each process group, SIGKILL after the grace period. It is idempotent and returns the
// first call's result.
func (c *Cluster) Stop() error {
	c.restartLock.Lock()
	defer c.restartLock.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return c.stopErr
	}
	c.stopped = true
	var errs []error
	// Extras first: an apiserver whose etcd is gone only logs errors until its grace period ends.
	for _, a := range c.extras {
		errs = append(errs, a.stop())
	}
	c.extras = nil
	for _, p := range []*process{c.apiserver, c.etcd} {
		if p != nil {
			errs = append(errs, p.stop(c.cfg.StopGracePeriod))
		}
	}
	c.stopErr = errors.Join(errs...)
	if c.stopErr != nil {
		c.stopErr = fmt.Errorf("stopping test cluster: %w", c.stopErr)
	}
	return c.stopErr
}

// URL is the apiserver's base URL, https://127.0.0.1:PORT.
func (c *Cluster) URL() string {
	return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(c.apiPort))
}

// RESTConfig returns a new client configuration for the admin identity (bearer token, group
// system:masters) that verifies the apiserver's certificate against its serving CA.
func (c *Cluster) RESTConfig() *rest.Config {
	return &rest.Config{
		Host:            c.URL(),
		BearerToken:     c.token,
		TLSClientConfig: rest.TLSClientConfig{CAData: slices.Clone(c.caPEM)},
		QPS:             100,
		Burst:           200,
	}
}

// KubeconfigPath is a kubeconfig file for the same admin identity as RESTConfig.
func (c *Cluster) KubeconfigPath() string { return c.paths.kubeconfig }

// CACertPEM is the CA certificate that signed the apiserver's serving certificate.
func (c *Cluster) CACertPEM() []byte { return slices.Clone(c.caPEM) }

// EtcdURL is the client URL of the cluster's etcd.
func (c *Cluster) EtcdURL() string { return c.etcdURL }

// Config returns a copy of the configuration the current kube-apiserver runs with.
func (c *Cluster) Config() Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg.clone()
}

// pids returns the process ids of etcd and of the current kube-apiserver (0 if none).
func (c *Cluster) pids() (etcd, apiserver int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.etcd != nil {
		etcd = c.etcd.pid()
	}
	if c.apiserver != nil {
		apiserver = c.apiserver.pid()
	}
	return etcd, apiserver
}

func (cfg Config) withDefaults() Config {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = defaultStartTimeout
	}
	if cfg.StopGracePeriod <= 0 {
		cfg.StopGracePeriod = defaultStopGracePeriod
	}
	return cfg
}

func (cfg Config) validate() error {
	var errs []error
	if cfg.BinDir == "" {
		errs = append(errs, errors.New("BinDir is required"))
	} else {
		for _, name := range []string{apiserverBin, etcdBin} {
			if err := checkExecutable(filepath.Join(cfg.BinDir, name)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if cfg.WorkDir == "" {
		errs = append(errs, errors.New("WorkDir is required"))
	}
	if len(cfg.ServiceAccountIssuers) == 0 {
		errs = append(errs, errors.New("at least one ServiceAccountIssuer is required"))
	}
	errs = append(errs, cfg.signingErrors()...)
	for i, k := range cfg.VerificationKeysPEM {
		if b, _ := pem.Decode(k); b == nil {
			errs = append(errs, fmt.Errorf("VerificationKeysPEM[%d] is not PEM", i))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid test cluster config: %w", err)
	}
	return nil
}

func (cfg Config) clone() Config {
	cfg.ServiceAccountIssuers = slices.Clone(cfg.ServiceAccountIssuers)
	cfg.SigningKeyPEM = slices.Clone(cfg.SigningKeyPEM)
	cfg.VerificationKeysPEM = slices.Clone(cfg.VerificationKeysPEM)
	for i, k := range cfg.VerificationKeysPEM {
		cfg.VerificationKeysPEM[i] = slices.Clone(k)
	}
	cfg.ExtraAPIServerArgs = slices.Clone(cfg.ExtraAPIServerArgs)
	return cfg
}

// prepareFiles creates the directories, the serving PKI and the admin token.
func (c *Cluster) prepareFiles() error {
	for _, d := range []string{c.paths.pki, filepath.Dir(c.paths.tokenFile), c.paths.saDir, c.paths.certDir, c.paths.logs} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
	}
	ca, err := pki.NewCA("kube-oidc-issuer testcluster CA")
	if err != nil {
		return fmt.Errorf("creating serving CA: %w", err)
	}
	serving, err := ca.IssueServer("127.0.0.1", "localhost")
	if err != nil {
		return fmt.Errorf("creating serving certificate: %w", err)
	}
	c.caPEM = ca.CertPEM()
	if err := os.WriteFile(c.paths.caCert, c.caPEM, 0o644); err != nil {
		return fmt.Errorf("writing serving CA: %w", err)
	}
	if c.paths.tlsCert, c.paths.tlsKey, err = serving.WriteFiles(c.paths.pki); err != nil {
		return fmt.Errorf("writing serving certificate: %w", err)
	}
	c.httpClient = &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, DisableKeepAlives: true},
	}

	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return fmt.Errorf("generating admin token: %w", err)
	}
	c.token = hex.EncodeToString(b)
	// token,user,uid,"group1,group2"
	line := fmt.Sprintf("%s,%s,%s,%q\n", c.token, AdminUser, AdminUser, AdminGroup)
	if err := os.WriteFile(c.paths.tokenFile, []byte(line), 0o600); err != nil {
		return fmt.Errorf("writing token file: %w", err)
	}
	return nil
}

// startEtcd starts etcd on fresh ports, retrying with other ports when one was taken meanwhile.
func (c *Cluster) startEtcd(ctx context.Context) error {
	log := c.cfg.Logger
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			return fmt.Errorf("starting etcd: %w", err)
		}
		clientURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
		peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
		// A failed attempt may have initialized the data directory with the old peer URL.
		if err := os.RemoveAll(c.paths.etcdData); err != nil {
			return fmt.Errorf("clearing etcd data directory: %w", err)
		}
		args := []string{
			"--name=testcluster",
			"--data-dir=" + c.paths.etcdData,
			"--listen-client-urls=" + clientURL,
			"--advertise-client-urls=" + clientURL,
			"--listen-peer-urls=" + peerURL,
			"--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=testcluster=" + peerURL,
			"--unsafe-no-fsync",
		}
		began := time.Now()
		p, err := startProcess(log, etcdBin, filepath.Join(c.cfg.BinDir, etcdBin), args, filepath.Join(c.paths.logs, "etcd.log"))
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.etcd = p
		c.mu.Unlock()
		err = c.waitReady(ctx, p, c.cfg.StartTimeout, func(ctx context.Context) error { return c.checkEtcd(ctx, clientURL) })
		if err == nil {
			c.etcdURL, c.etcdArgs = clientURL, args
			log.Debug("etcd ready", "url", clientURL, "took", time.Since(began).Round(time.Millisecond))
			return nil
		}
		_ = p.stop(c.cfg.StopGracePeriod)
		if !isBindError(p) || attempt == startAttempts {
			return fmt.Errorf("starting etcd: %w", err)
		}
		log.Warn("etcd port taken, retrying on other ports", "attempt", attempt)
	}
}

// startFirstAPIServer starts kube-apiserver on a fresh port, retrying with another port when the
// one picked was taken meanwhile.
func (c *Cluster) startFirstAPIServer(ctx context.Context) error {
	port, err := onFreePort(c.cfg.Logger, apiserverBin, func(port int) (bool, error) { return c.startAPIServer(ctx, port) })
	if err != nil {
		return fmt.Errorf("starting kube-apiserver: %w", err)
	}
	c.apiPort = port // fixed from now on: RestartAPIServer reuses it
	return nil
}

// onFreePort calls start with a loopback port that was free a moment ago, and again with another
// one when start reports that the port was taken before the child bound it. It returns the port
// start succeeded with.
func onFreePort(log *slog.Logger, component string, start func(port int) (bindFailed bool, err error)) (int, error) {
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(1)
		if err != nil {
			return 0, err
		}
		bindFailed, err := start(ports[0])
		if err == nil {
			return ports[0], nil
		}
		if !bindFailed || attempt == startAttempts {
			return 0, err
		}
		log.Warn("port taken, retrying on another port", "component", component, "port", ports[0], "attempt", attempt)
	}
}

// startAPIServer starts the cluster's own kube-apiserver with the current configuration on port,
// its keys in the serviceaccount directory. On failure the process is stopped, and bindFailed
// tells whether the port was in use.
func (c *Cluster) startAPIServer(ctx context.Context, port int) (bindFailed bool, err error) {
	c.mu.Lock()
	cfg := c.cfg
	c.incarnation++
	n := c.incarnation
	c.mu.Unlock()

	return c.runAPIServer(ctx, cfg, port, apiserverRun{
		name:    apiserverBin,
		keyDir:  c.paths.saDir,
		logPath: filepath.Join(c.paths.logs, fmt.Sprintf("%s-%d.log", apiserverBin, n)),
		track: func(p *process) error {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.apiserver = p
			return nil
		},
	})
}

// apiserverRun is what differs between the cluster's own kube-apiserver and an extra one.
type apiserverRun struct {
	name    string // component name in logs and errors
	keyDir  string // receives the service-account key files; emptied first
	logPath string
	// track records the process as soon as it runs, so that Stop finds an apiserver that is still
	// starting, and is called with nil once a process that did not become ready has been stopped.
	// An error (the cluster was stopped meanwhile) aborts the start.
	track func(*process) error
}

// runAPIServer writes cfg's service-account keys into run.keyDir, starts kube-apiserver on port
// against the cluster's etcd, and waits until it is ready. Every apiserver of the cluster shares
// the serving certificate (its SAN is 127.0.0.1, whatever the port) and the token file, so one
// client configuration reaches any of them. On failure the process is stopped, and bindFailed
// tells whether the port was in use.
func (c *Cluster) runAPIServer(ctx context.Context, cfg Config, port int, run apiserverRun) (bindFailed bool, err error) {
	signingArgs, err := serviceAccountSigningArgs(run.keyDir, cfg)
	if err != nil {
		return false, err
	}
	args := []string{
		"--etcd-servers=" + c.etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		// Without this the discovery document's default jwks_uri would lack the port.
		"--external-hostname=" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		"--cert-dir=" + c.paths.certDir,
		"--tls-cert-file=" + c.paths.tlsCert,
		"--tls-private-key-file=" + c.paths.tlsKey,
		"--token-auth-file=" + c.paths.tokenFile,
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.96.0.0/24",
		// Several apiservers on one etcd (StartAPIServer) would otherwise fight over the
		// kubernetes Service's endpoints.
		"--endpoint-reconciler-type=none",
		"--api-audiences=" + cfg.ServiceAccountIssuers[0],
	}
	args = append(args, signingArgs...)
	for _, iss := range cfg.ServiceAccountIssuers {
		args = append(args, "--service-account-issuer="+iss)
	}
	if cfg.ServiceAccountJWKSURI != "" {
		args = append(args, "--service-account-jwks-uri="+cfg.ServiceAccountJWKSURI)
	}
	args = append(args, cfg.ExtraAPIServerArgs...)

	began := time.Now()
	p, err := startProcess(cfg.Logger, run.name, filepath.Join(cfg.BinDir, apiserverBin), args, run.logPath)
	if err != nil {
		return false, err
	}
	if err := run.track(p); err != nil {
		_ = p.stop(cfg.StopGracePeriod)
		return false, err
	}

	url := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := c.waitReady(ctx, p, cfg.StartTimeout, func(ctx context.Context) error { return c.checkAPIServer(ctx, url) }); err != nil {
		_ = p.stop(cfg.StopGracePeriod)
		_ = run.track(nil)
		return isBindError(p), err
	}
	cfg.Logger.Debug("kube-apiserver ready", "component", run.name, "url", url, "took", time.Since(began).Round(time.Millisecond), "log", run.logPath)
	return false, nil
}

// writeServiceAccountKeys replaces the files in dir and returns the signing key file and the
// verification key files (signing key first).
func writeServiceAccountKeys(dir string, cfg Config) (signingKey string, keyFiles []string, err error) {
	if err := os.RemoveAll(dir); err != nil {
		return "", nil, fmt.Errorf("clearing service-account key directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, fmt.Errorf("creating service-account key directory: %w", err)
	}
	signingKey = filepath.Join(dir, "signing.key")
	if err := os.WriteFile(signingKey, cfg.SigningKeyPEM, 0o600); err != nil {
		return "", nil, fmt.Errorf("writing signing key: %w", err)
	}
	// kube-apiserver publishes and verifies with --service-account-key-file only: the signing
	// key's public half must be listed there too, or its own tokens would not verify.
	keyFiles = []string{signingKey}
	for i, k := range cfg.VerificationKeysPEM {
		f := filepath.Join(dir, fmt.Sprintf("verify-%02d.pem", i))
		if err := os.WriteFile(f, k, 0o600); err != nil {
			return "", nil, fmt.Errorf("writing verification key %d: %w", i, err)
		}
		keyFiles = append(keyFiles, f)
	}
	return signingKey, keyFiles, nil
}

// waitReady polls check until it succeeds, the process exits, ctx ends or timeout passes.
func (c *Cluster) waitReady(ctx context.Context, p *process, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		if lastErr = check(ctx); lastErr == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before becoming ready (%v); last lines of %s:\n%s", p.name, p.waitErr, p.logPath, p.logTail(logTailLines))
		case <-ctx.Done():
			why := "did not become ready within " + timeout.String()
			if !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
				why = "start canceled: " + context.Cause(ctx).Error()
			}
			return fmt.Errorf("%s %s (last check: %v); last lines of %s:\n%s", p.name, why, lastErr, p.logPath, p.logTail(logTailLines))
		case <-tick.C:
		}
	}
}

func (c *Cluster) checkEtcd(ctx context.Context, clientURL string) error {
	body, err := c.get(ctx, clientURL+"/health", "")
	if err != nil {
		return err
	}
	var h struct {
		Health string `json:"health"`
	}
	if err := json.Unmarshal(body, &h); err != nil || h.Health != "true" {
		return fmt.Errorf("etcd /health: %s", strings.TrimSpace(string(body)))
	}
	return nil
}

func (c *Cluster) checkAPIServer(ctx context.Context, url string) error {
	_, err := c.get(ctx, url+"/readyz", c.token)
	return err
}

// get fetches url and returns the body of a 200 response.
func (c *Cluster) get(ctx context.Context, url, token string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// writeKubeconfig writes the admin kubeconfig. JSON is valid YAML, and the v1 types carry the
// kubeconfig schema's field names.
func (c *Cluster) writeKubeconfig() error {
	const name = "testcluster"
	kc := clientcmdv1.Config{
		APIVersion:     "v1",
		Kind:           "Config",
		CurrentContext: name,
		Clusters: []clientcmdv1.NamedCluster{{
			Name:    name,
			Cluster: clientcmdv1.Cluster{Server: c.URL(), CertificateAuthorityData: c.caPEM},
		}},
		AuthInfos: []clientcmdv1.NamedAuthInfo{{
			Name:     AdminUser,
			AuthInfo: clientcmdv1.AuthInfo{Token: c.token},
		}},
		Contexts: []clientcmdv1.NamedContext{{
			Name:    name,
			Context: clientcmdv1.Context{Cluster: name, AuthInfo: AdminUser},
		}},
	}
	b, err := json.MarshalIndent(kc, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding kubeconfig: %w", err)
	}
	if err := os.WriteFile(c.paths.kubeconfig, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}
	return nil
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) { return freeport.TakeN(n) }

// isBindError tells whether the process failed because its port was in use.
func isBindError(p *process) bool {
	return strings.Contains(p.logTail(logTailLines), "address already in use")
}
