package signer

import (
	"context"
	"fmt"
	"net"
	"time"

	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	externaljwtv1 "k8s.io/externaljwt/apis/v1"
)

// Limits of the gRPC server. kube-apiserver holds one connection per process and multiplexes every
// call on it, so these are generous for it and still bound what any other local client can cost.
const (
	// maxConnections bounds open connections; more wait in the listen backlog.
	maxConnections = 32
	// maxConcurrentStreams bounds calls in flight per connection; more wait on the client side.
	// With maxRecvOverhead it bounds the memory one connection can pin to about 16 MiB.
	maxConcurrentStreams = 256
	// maxRecvOverhead is room for the protobuf envelope around the largest accepted claims.
	maxRecvOverhead = 1 << 10
	// maxHeaderListSize bounds the gRPC metadata of one call.
	maxHeaderListSize = 16 << 10
	// connectionTimeout bounds the HTTP/2 handshake of a new connection, so that a client that
	// connects and sends nothing does not hold a connection slot.
	connectionTimeout = 10 * time.Second
	// shutdownGrace is how long Serve waits for calls in flight before cutting connections.
	shutdownGrace = 5 * time.Second
)

// serverOptions are the gRPC limits above, plus keepalive enforcement: a client may ping at most
// every 30 s (more often is answered with GOAWAY), and the server pings an idle client after
// 2 min to find connections whose peer is gone.
func (s *Server) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.UnaryInterceptor(s.metrics.interceptor),
		grpc.MaxRecvMsgSize(s.maxClaims + maxRecvOverhead),
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		grpc.MaxHeaderListSize(maxHeaderListSize),
		grpc.ConnectionTimeout(connectionTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 30 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Minute, Timeout: 20 * time.Second}),
	}
}

// Serve runs the ExternalJWTSigner service on lis until ctx ends, then stops gracefully: new calls
// are refused, calls in flight get shutdownGrace to finish. It closes lis (a listener from Listen
// removes its socket). It returns nil after a stop through ctx, and the error otherwise. Serve may
// be called again with a new listener after it returned.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	gs := grpc.NewServer(s.serverOptions()...)
	externaljwtv1.RegisterExternalJWTSignerServer(gs, s)

	addr := lis.Addr().String()
	served := make(chan error, 1)
	go func() { served <- gs.Serve(netutil.LimitListener(lis, maxConnections)) }()
	s.log.InfoContext(ctx, "external JWT signer serving", "socket", addr)

	select {
	case err := <-served:
		return fmt.Errorf("serving the external JWT signer on %s: %w", addr, err)
	case <-ctx.Done():
	}

	began := time.Now()
	stopped := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(shutdownGrace)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		s.log.Warn("external JWT signer: calls still in flight after the grace period; closing connections", "grace", shutdownGrace)
		gs.Stop()
		<-stopped
	}
	<-served // nil after a stop
	s.log.Info("external JWT signer stopped", "socket", addr, "took", time.Since(began).Round(time.Millisecond))
	return nil
}
