package testcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"
)

// APIServer is an additional kube-apiserver of a Cluster, started by Cluster.StartAPIServer. Its
// methods are safe for concurrent use.
type APIServer struct {
	c     *Cluster
	url   string // set before StartAPIServer returns it
	grace time.Duration

	mu      sync.Mutex // guards the fields below
	proc    *process   // nil until the process runs
	stopped bool
	stopErr error
}

// StartAPIServer starts one more kube-apiserver against the cluster's etcd, on its own free
// loopback port, and waits until it answers /readyz: the way a control plane looks while it rolls,
// with several apiservers behind one endpoint that need not sign with the same key.
//
// mutate changes a copy of the configuration the cluster's own apiserver runs with (typically
// SigningKeyPEM and VerificationKeysPEM); the cluster's configuration is not touched. WorkDir
// cannot change. BinDir may, to run another kube-apiserver version next to the first. The new
// apiserver shares the serving certificate (so RESTConfig with Host set to its URL reaches it),
// the admin token and every flag the cluster passes; its key files go to
// serviceaccount-extra-N/ and its output to logs/kube-apiserver-extra-N.log under WorkDir.
//
// It runs until its Stop or the cluster's Stop. ctx bounds only the start.
func (c *Cluster) StartAPIServer(ctx context.Context, mutate func(*Config)) (*APIServer, error) {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil, errors.New("starting an extra kube-apiserver: cluster is stopped")
	}
	cfg := c.cfg.clone()
	workDir := c.cfg.WorkDir
	c.extraCount++
	n := c.extraCount
	c.mu.Unlock()

	name := fmt.Sprintf("%s-extra-%d", apiserverBin, n)
	if mutate != nil {
		mutate(&cfg)
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	if cfg.WorkDir != workDir {
		return nil, fmt.Errorf("starting %s: WorkDir cannot change", name)
	}

	a := &APIServer{c: c, grace: cfg.StopGracePeriod}
	// Registered before the process exists, so that a Stop of the cluster while it starts stops it
	// too (through track, which refuses once a is stopped).
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil, fmt.Errorf("starting %s: cluster is stopped", name)
	}
	c.extras = append(c.extras, a)
	c.mu.Unlock()

	began := time.Now()
	port, err := onFreePort(cfg.Logger, name, func(port int) (bool, error) {
		return c.runAPIServer(ctx, cfg, port, apiserverRun{
			name:    name,
			keyDir:  filepath.Join(workDir, fmt.Sprintf("serviceaccount-extra-%d", n)),
			logPath: filepath.Join(c.paths.logs, name+".log"),
			track:   a.track,
		})
	})
	if err != nil {
		c.forget(a)
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	a.url = "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cfg.Logger.Info("extra kube-apiserver ready", "component", name, "url", a.url, "took", time.Since(began).Round(time.Millisecond))
	return a, nil
}

// URL is the apiserver's base URL, https://127.0.0.1:PORT.
func (a *APIServer) URL() string { return a.url }

// Stop stops the apiserver: SIGTERM to its process group, SIGKILL after the grace period. The
// cluster's etcd and its other apiservers keep running. Stop is idempotent and returns the first
// call's result.
func (a *APIServer) Stop() error {
	err := a.stop()
	a.c.forget(a)
	return err
}

// stop is Stop without unregistering from the cluster, for Cluster.Stop, which holds the cluster's
// lock and drops all extras itself.
func (a *APIServer) stop() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return a.stopErr
	}
	a.stopped = true
	if a.proc != nil {
		if err := a.proc.stop(a.grace); err != nil {
			a.stopErr = fmt.Errorf("stopping %s: %w", a.proc.name, err)
		}
	}
	return a.stopErr
}

// track records the process of a starting apiserver (see apiserverRun.track).
func (a *APIServer) track(p *process) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		if p == nil {
			return nil
		}
		return errors.New("cluster is stopped")
	}
	a.proc = p
	return nil
}

// pid is the apiserver's process id, 0 if it has none.
func (a *APIServer) pid() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc == nil {
		return 0
	}
	return a.proc.pid()
}

// forget drops a from the apiservers Stop has to stop.
func (c *Cluster) forget(a *APIServer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.extras = slices.DeleteFunc(c.extras, func(x *APIServer) bool { return x == a })
}
