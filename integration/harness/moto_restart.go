package harness

import (
	"context"
	"fmt"
)

// Restart stops moto_server and starts a new one with the same configuration on the same port, as
// an AWS endpoint that goes away and comes back does; clients configured with m.URL reach the new
// one. moto keeps its state in memory only, so everything emulated is gone: callers that relied on
// it must recreate it. m is stopped whatever happens; on success the returned Moto is the running
// one, and the caller stops it.
//
// Give MotoConfig.Port a port from FreePort when a test restarts moto_server: a port moto_server
// picked itself is in the kernel's ephemeral range, where an outgoing connection may take it while
// moto_server is down.
func (m *Moto) Restart(ctx context.Context) (*Moto, error) {
	if err := m.Stop(); err != nil {
		return nil, fmt.Errorf("restarting moto_server: %w", err)
	}
	cfg := m.cfg
	cfg.Port = m.Port
	if m.tempLog {
		cfg.LogPath = "" // Stop removed it: a new temporary log
	}
	next, err := StartMoto(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("restarting moto_server on port %d: %w", m.Port, err)
	}
	return next, nil
}
