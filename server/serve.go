package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// serveLimits bounds what one client can hold. The documents are a few kilobytes and requests
// have no body, so every limit can be tight without hurting a legitimate relying party.
type serveLimits struct {
	// ListenerConfig bounds connections and the time each may spend handshaking, sending
	// headers, being answered and idling (see boundedListener).
	ListenerConfig
	// maxHeaderBytes is far below net/http's 1 MiB default but leaves room for a browser on a shared
	// domain sending its cookies; net/http answers 431 beyond it (it allows 4 KiB of slack).
	maxHeaderBytes int
	// shutdown bounds the graceful drain; what is still in flight after it is cut off.
	shutdown time.Duration
}

func defaultServeLimits() serveLimits {
	return serveLimits{
		ListenerConfig: DefaultListenerConfig(),
		maxHeaderBytes: 32 << 10,
		shutdown:       10 * time.Second,
	}
}

// Serve listens on addr and serves h (over TLS when tlsConfig is not nil) until ctx is done, then
// shuts down gracefully: it stops accepting, lets in-flight requests finish for up to 10 s, and
// returns nil. It returns an error only when it cannot listen or serving fails. Connections are
// bounded by DefaultListenerConfig.
func Serve(ctx context.Context, addr string, h http.Handler, tlsConfig *tls.Config, logger *slog.Logger) error {
	return ServeWith(ctx, addr, h, tlsConfig, logger, DefaultListenerConfig())
}

// ServeWith is Serve with the connections bounded by cfg.
func ServeWith(ctx context.Context, addr string, h http.Handler, tlsConfig *tls.Config, logger *slog.Logger, cfg ListenerConfig) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("serving on %s: %w", addr, err)
	}
	limits := defaultServeLimits()
	limits.ListenerConfig = cfg
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	return serve(ctx, l, h, tlsConfig, logger, limits)
}

// ServeListener is Serve on a listener the caller opened (an ephemeral port in tests, a socket
// handed over by systemd). It closes l.
func ServeListener(ctx context.Context, l net.Listener, h http.Handler, tlsConfig *tls.Config, logger *slog.Logger) error {
	return serve(ctx, l, h, tlsConfig, logger, defaultServeLimits())
}

func serve(ctx context.Context, l net.Listener, h http.Handler, tlsConfig *tls.Config, logger *slog.Logger, limits serveLimits) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	addr := l.Addr().String()
	if err := limits.Validate(); err != nil {
		_ = l.Close()
		return fmt.Errorf("serving on %s: %w", addr, err)
	}
	bl := newBoundedListener(l, limits.ListenerConfig, logger)
	bl.start()
	// After Shutdown: the sweeper keeps bounding the connections being drained.
	defer bl.stop()
	if tlsConfig != nil {
		h = streamWriteBound{next: h, timeout: limits.WriteTimeout}
	}
	srv := &http.Server{
		Handler:   h,
		TLSConfig: tlsConfig,
		// No ReadHeaderTimeout, ReadTimeout, WriteTimeout or IdleTimeout: with them net/http arms
		// connection deadlines several times per request. The bounded listener enforces the same
		// bounds from its sweeper, through ConnState.
		ConnState:      bl.connState,
		MaxHeaderBytes: limits.maxHeaderBytes,
		// net/http logs failed TLS handshakes and the like here; on a public listener scanners
		// cause them by the thousand, so they are debug detail, not warnings. Accept errors are
		// the bounded listener's, at warn.
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	done := make(chan error, 1)
	go func() {
		if tlsConfig != nil {
			// The certificate comes from tlsConfig (GetCertificate or Certificates).
			done <- srv.ServeTLS(bl, "", "")
		} else {
			done <- srv.Serve(bl)
		}
	}()
	logger.Info("listening", "address", addr, "tls", tlsConfig != nil,
		"maxConnections", limits.MaxConnections, "readHeaderTimeout", limits.ReadHeaderTimeout,
		"writeTimeout", limits.WriteTimeout, "idleTimeout", limits.IdleTimeout,
		"idleTimeoutUnderPressure", limits.PressureIdleTimeout)

	select {
	case err := <-done:
		return fmt.Errorf("serving HTTP on %s: %w", addr, err)
	case <-ctx.Done():
	}

	logger.Info("shutting down", "address", addr, "timeout", limits.shutdown)
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limits.shutdown)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// Shutdown was asked for and happens anyway; the cut-off clients are worth a warning, not
		// a failed exit.
		logger.Warn("requests still in flight at the end of the graceful shutdown; closing their connections",
			"address", addr, "error", err)
		_ = srv.Close()
	}
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving HTTP on %s: %w", addr, err)
	}
	logger.Info("stopped listening", "address", addr)
	return nil
}

// streamWriteBound gives each HTTP/2 request (TLS only) the write bound an HTTP/1 request gets
// from the sweeper. An HTTP/2 response waits for the client's flow-control window rather than
// for the socket, so a client that opens streams and never grants window would hold their
// handlers forever; the stream's own deadline (a timer per stream, HTTP/2 only) resets it instead.
type streamWriteBound struct {
	next    http.Handler
	timeout time.Duration
}

func (h streamWriteBound) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 {
		// Every HTTP/2 ResponseWriter supports it; an error would only mean no bound.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(h.timeout))
	}
	h.next.ServeHTTP(w, r)
}
