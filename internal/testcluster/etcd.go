package testcluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"
)

// StopEtcd stops etcd (SIGTERM to its process group, SIGKILL after the grace period) and leaves
// kube-apiserver running without its storage: an etcd outage as clients of the apiserver see it.
// The data directory stays, so StartEtcd brings every object back.
func (c *Cluster) StopEtcd() error {
	c.restartLock.Lock()
	defer c.restartLock.Unlock()
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return errors.New("stopping etcd: cluster is stopped")
	}
	p, grace := c.etcd, c.cfg.StopGracePeriod
	c.etcd = nil
	c.mu.Unlock()
	if p == nil {
		return errors.New("stopping etcd: it is not running")
	}
	if err := p.stop(grace); err != nil {
		// Still running: Stop must find it.
		c.mu.Lock()
		c.etcd = p
		c.mu.Unlock()
		return fmt.Errorf("stopping etcd: %w", err)
	}
	c.cfg.Logger.Info("etcd stopped", "url", c.etcdURL)
	return nil
}

// StartEtcd starts etcd again after StopEtcd, with the same command line: the same data directory
// (every object survives) and the same client and peer ports, which kube-apiserver keeps dialing.
// It returns once etcd answers /health; kube-apiserver reconnects on its own, in its own time (poll
// its /readyz to know when). A port still held by the stopped etcd's connections is retried for a
// few seconds.
func (c *Cluster) StartEtcd(ctx context.Context) error {
	c.restartLock.Lock()
	defer c.restartLock.Unlock()
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return errors.New("starting etcd: cluster is stopped")
	}
	if c.etcd != nil {
		c.mu.Unlock()
		return errors.New("starting etcd: it is running")
	}
	cfg := c.cfg
	c.mu.Unlock()

	began := time.Now()
	for attempt := 1; ; attempt++ {
		p, err := startProcess(cfg.Logger, etcdBin, filepath.Join(cfg.BinDir, etcdBin), c.etcdArgs, filepath.Join(c.paths.logs, "etcd.log"))
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.etcd = p
		c.mu.Unlock()
		err = c.waitReady(ctx, p, cfg.StartTimeout, func(ctx context.Context) error { return c.checkEtcd(ctx, c.etcdURL) })
		if err == nil {
			cfg.Logger.Info("etcd started again", "url", c.etcdURL, "took", time.Since(began).Round(time.Millisecond))
			return nil
		}
		_ = p.stop(cfg.StopGracePeriod)
		c.mu.Lock()
		c.etcd = nil
		c.mu.Unlock()
		if !isBindError(p) || attempt == startAttempts {
			return fmt.Errorf("starting etcd again: %w", err)
		}
		cfg.Logger.Warn("etcd port still busy, retrying", "url", c.etcdURL, "attempt", attempt)
		select {
		case <-ctx.Done():
			return fmt.Errorf("starting etcd again: %w", context.Cause(ctx))
		case <-time.After(time.Second):
		}
	}
}

// APIServerReady reports whether the cluster's own kube-apiserver answers /readyz with 200 now:
// after StartEtcd, that is when it has reconnected to its storage.
func (c *Cluster) APIServerReady(ctx context.Context) error {
	return c.checkAPIServer(ctx, c.URL())
}
