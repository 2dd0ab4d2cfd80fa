package signer

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	externaljwtv1 "k8s.io/externaljwt/apis/v1"
)

const (
	// DefaultRefreshHint is how often kube-apiserver re-fetches the keys: a newly published key
	// reaches its JWKS and verifier within this long.
	DefaultRefreshHint = 10 * time.Second
	// DefaultMaxTokenExpiration is the longest token lifetime Metadata allows; kube-apiserver
	// defaults --service-account-max-token-expiration to it.
	DefaultMaxTokenExpiration = 24 * time.Hour
	// MinMaxTokenExpiration is the smallest maximum kube-apiserver accepts from a signer.
	MinMaxTokenExpiration = 10 * time.Minute
	// DefaultMaxClaimsBytes bounds the encoded claims of one Sign. kube-apiserver's claims are a
	// few hundred bytes (bound pod and node names included).
	DefaultMaxClaimsBytes = 64 << 10
)

// Config configures a Server.
type Config struct {
	// Keys is where the signing and published keys come from. Required.
	Keys KeySet
	// RefreshHint is FetchKeys' refresh_hint_seconds: a whole number of seconds, at least 1.
	// Zero means DefaultRefreshHint.
	RefreshHint time.Duration
	// MaxTokenExpiration is Metadata's max_token_expiration_seconds: whole seconds, at least
	// MinMaxTokenExpiration. Zero means DefaultMaxTokenExpiration.
	MaxTokenExpiration time.Duration
	// MaxClaimsBytes bounds the base64url claims of a Sign request. Zero means
	// DefaultMaxClaimsBytes.
	MaxClaimsBytes int
	// Logger receives errors with their details and one debug line per token. Nil discards.
	Logger *slog.Logger
	// Registerer receives the call metrics; nil leaves them unexported.
	Registerer prometheus.Registerer
}

// Server implements the ExternalJWTSigner v1 gRPC service over a KeySet. It is safe for
// concurrent use; Serve runs it on a listener.
type Server struct {
	metrics *metrics
	externaljwtv1.UnimplementedExternalJWTSignerServer

	keys        KeySet
	refreshHint int64 // seconds
	maxExpiry   int64 // seconds
	maxClaims   int
	log         *slog.Logger
}

var _ externaljwtv1.ExternalJWTSignerServer = (*Server)(nil)

// NewServer validates cfg and returns a Server.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Keys == nil {
		return nil, errors.New("creating signer: Keys is required")
	}
	if cfg.RefreshHint == 0 {
		cfg.RefreshHint = DefaultRefreshHint
	}
	if cfg.MaxTokenExpiration == 0 {
		cfg.MaxTokenExpiration = DefaultMaxTokenExpiration
	}
	if cfg.MaxClaimsBytes == 0 {
		cfg.MaxClaimsBytes = DefaultMaxClaimsBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if cfg.RefreshHint < time.Second || cfg.RefreshHint%time.Second != 0 {
		errs = append(errs, fmt.Errorf("refresh hint %s must be a whole number of seconds, at least 1s", cfg.RefreshHint))
	}
	if cfg.MaxTokenExpiration < MinMaxTokenExpiration || cfg.MaxTokenExpiration%time.Second != 0 {
		errs = append(errs, fmt.Errorf("maximum token expiration %s must be whole seconds, at least %s (kube-apiserver refuses less)", cfg.MaxTokenExpiration, MinMaxTokenExpiration))
	}
	if cfg.MaxClaimsBytes < 0 {
		errs = append(errs, fmt.Errorf("maximum claims size %d must be positive", cfg.MaxClaimsBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("creating signer: %w", err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("creating signer: %w", err)
	}
	return &Server{
		metrics:     m,
		keys:        cfg.Keys,
		refreshHint: int64(cfg.RefreshHint / time.Second),
		maxExpiry:   int64(cfg.MaxTokenExpiration / time.Second),
		maxClaims:   cfg.MaxClaimsBytes,
		log:         cfg.Logger,
	}, nil
}

// Sign signs the claims kube-apiserver sends with the active key and returns the header and
// signature segments of the token.
func (s *Server) Sign(ctx context.Context, req *externaljwtv1.SignJWTRequest) (*externaljwtv1.SignJWTResponse, error) {
	began := time.Now()
	claims := req.GetClaims()
	if err := s.checkClaims(claims); err != nil {
		s.log.WarnContext(ctx, "refusing to sign", "claimsBytes", len(claims), "err", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	snap, err := s.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	header, err := encodeHeader(snap.Active)
	if err != nil {
		s.log.ErrorContext(ctx, "signing failed", "kid", snap.Active.KeyID(), "err", err)
		return nil, status.Error(codes.Internal, "signing failed")
	}
	// The signature covers the claims exactly as received: they become the token's payload
	// segment verbatim, so they must not be re-encoded.
	sig, err := signJWS(snap.Active, header+"."+claims)
	if err != nil {
		s.log.ErrorContext(ctx, "signing failed", "kid", snap.Active.KeyID(), "err", err)
		return nil, status.Error(codes.Internal, "signing failed")
	}
	s.log.DebugContext(ctx, "signed token", "kid", snap.Active.KeyID(), "alg", snap.Active.Algorithm(), "took", time.Since(began))
	return &externaljwtv1.SignJWTResponse{
		Header:    header,
		Signature: base64.RawURLEncoding.EncodeToString(sig),
	}, nil
}

// checkClaims bounds and validates the claims: kube-apiserver sends a JSON object, unpadded
// base64url; anything else is a confused or hostile caller, and signing it would hand out a
// signature over attacker-chosen bytes.
func (s *Server) checkClaims(claims string) error {
	if claims == "" {
		return errors.New("claims are empty")
	}
	if len(claims) > s.maxClaims {
		return fmt.Errorf("claims exceed %d bytes", s.maxClaims)
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(claims)
	if err != nil {
		return errors.New("claims are not unpadded base64url")
	}
	if !bytes.HasPrefix(bytes.TrimLeft(raw, " \t\r\n"), []byte("{")) || !json.Valid(raw) {
		return errors.New("claims are not a JSON object")
	}
	return nil
}

// FetchKeys returns every published key, the data timestamp and the refresh hint.
func (s *Server) FetchKeys(ctx context.Context, _ *externaljwtv1.FetchKeysRequest) (*externaljwtv1.FetchKeysResponse, error) {
	snap, err := s.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*externaljwtv1.Key, 0, len(snap.Published))
	for _, p := range snap.Published {
		out = append(out, &externaljwtv1.Key{
			KeyId:                    p.Public.KeyID(),
			Key:                      p.Public.DER(), // encoded once, when the key was parsed
			ExcludeFromOidcDiscovery: p.ExcludeFromOIDCDiscovery,
		})
	}
	return &externaljwtv1.FetchKeysResponse{
		Keys:               out,
		DataTimestamp:      timestamppb.New(snap.Updated),
		RefreshHintSeconds: s.refreshHint,
	}, nil
}

// Metadata returns the maximum token lifetime. kube-apiserver calls it once at start.
func (s *Server) Metadata(context.Context, *externaljwtv1.MetadataRequest) (*externaljwtv1.MetadataResponse, error) {
	return &externaljwtv1.MetadataResponse{MaxTokenExpirationSeconds: s.maxExpiry}, nil
}

// snapshot reads and checks the key set, mapping failures to gRPC status errors.
func (s *Server) snapshot(ctx context.Context) (Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return Snapshot{}, status.FromContextError(err).Err()
	}
	snap, err := s.keys.Snapshot(ctx)
	if err != nil {
		s.log.ErrorContext(ctx, "reading the key set", "err", err)
		return Snapshot{}, status.Error(codes.Unavailable, "no keys available")
	}
	if err := snap.check(); err != nil {
		s.log.ErrorContext(ctx, "the key set is inconsistent; refusing to use it", "err", err)
		return Snapshot{}, status.Error(codes.FailedPrecondition, "key set is inconsistent")
	}
	return snap, nil
}
