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
	// readHeader stops clients that trickle their request headers (slowloris).
	readHeader time.Duration
	read       time.Duration
	write      time.Duration
	// idle keeps connections of polling relying parties open between fetches without letting idle
	// connections pile up.
	idle time.Duration
	// maxHeaderBytes is far below net/http's 1 MiB default but leaves room for a browser on a shared
	// domain sending its cookies; net/http answers 431 beyond it (it allows 4 KiB of slack).
	maxHeaderBytes int
	// shutdown bounds the graceful drain; what is still in flight after it is cut off.
	shutdown time.Duration
}

func defaultServeLimits() serveLimits {
	return serveLimits{
		readHeader:     5 * time.Second,
		read:           10 * time.Second,
		write:          10 * time.Second,
		idle:           2 * time.Minute,
		maxHeaderBytes: 32 << 10,
		shutdown:       10 * time.Second,
	}
}

// Serve listens on addr and serves h (over TLS when tlsConfig is not nil) until ctx is done, then
// shuts down gracefully: it stops accepting, lets in-flight requests finish for up to 10 s, and
// returns nil. It returns an error only when it cannot listen or serving fails.
func Serve(ctx context.Context, addr string, h http.Handler, tlsConfig *tls.Config, logger *slog.Logger) error {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	return ServeListener(ctx, l, h, tlsConfig, logger)
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
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: limits.readHeader,
		ReadTimeout:       limits.read,
		WriteTimeout:      limits.write,
		IdleTimeout:       limits.idle,
		MaxHeaderBytes:    limits.maxHeaderBytes,
		// net/http logs failed TLS handshakes and the like here; on a public listener scanners
		// cause them by the thousand, so they are debug detail, not warnings.
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	done := make(chan error, 1)
	go func() {
		if tlsConfig != nil {
			// The certificate comes from tlsConfig (GetCertificate or Certificates).
			done <- srv.ServeTLS(l, "", "")
		} else {
			done <- srv.Serve(l)
		}
	}()
	logger.Info("listening", "address", addr, "tls", tlsConfig != nil)

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
