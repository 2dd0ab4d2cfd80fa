package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
)

// Keys is the key lifecycle the API acts on (a *lifecycle.Manager).
type Keys interface {
	Snapshot(ctx context.Context) (lifecycle.Snapshot, error)
	Stage(ctx context.Context, alg string) (lifecycle.Record, error)
	Promote(ctx context.Context, kid string, force bool) (lifecycle.Record, error)
	Remove(ctx context.Context, kid string, force bool) (lifecycle.Record, lifecycle.Removal, error)
}

// Config configures the admin API handler.
type Config struct {
	Keys Keys
	// Authenticator and Authorizer check bearer tokens (KubeAuth); nil when only the static token
	// is accepted.
	Authenticator Authenticator
	Authorizer    Authorizer
	// StaticToken, when set, is accepted for everything.
	StaticToken *StaticToken
	// Logger receives the audit log.
	Logger *slog.Logger
	// RequestTimeout bounds each request's work (default 8 s, under the listener's 10 s write
	// timeout, so a slow request still gets its error answer).
	RequestTimeout time.Duration
}

// maxBody bounds request bodies: a stage request is a few bytes.
const maxBody = 64 << 10

// promoteNote tells the operator what completes a promote.
const promoteNote = "the signing-key Secret now holds this key (and the verification bundle); kube-apiserver signs with it once the control plane restarts with the Secret's contents"

// NewHandler returns the admin API. Every request is authenticated, authorized and audited before
// it is routed, so unauthenticated callers learn nothing, not even which paths exist.
func NewHandler(cfg Config) (http.Handler, error) {
	if cfg.Keys == nil {
		return nil, errors.New("admin API: no key lifecycle")
	}
	if cfg.Authenticator == nil && cfg.StaticToken == nil {
		return nil, errors.New("admin API: no way to authenticate callers (configure Kubernetes access or an admin token file)")
	}
	if cfg.Authenticator != nil && cfg.Authorizer == nil {
		return nil, errors.New("admin API: an authenticator needs an authorizer")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 8 * time.Second
	}
	a := &api{cfg: cfg, authn: chain{static: cfg.StaticToken, next: cfg.Authenticator}, audit: cfg.Logger.With("component", "admin-audit")}
	r := chi.NewRouter()
	r.NotFound(a.handle("unknown", func(*http.Request, *entry) (int, any) {
		return errorResult(http.StatusNotFound, "NotFound", "no such admin endpoint; see "+PathPrefix)
	}))
	r.MethodNotAllowed(a.handle("unknown", func(*http.Request, *entry) (int, any) {
		return errorResult(http.StatusMethodNotAllowed, "MethodNotAllowed", "method not allowed")
	}))
	r.Get(PathPrefix, a.handle("list", a.list))
	r.Post(PathPrefix, a.handle("stage", a.stage))
	r.Post(PathPrefix+"/{kid}/promote", a.handle("promote", a.promote))
	r.Delete(PathPrefix+"/{kid}", a.handle("remove", a.remove))
	return r, nil
}

type api struct {
	cfg   Config
	authn Authenticator
	audit *slog.Logger
}

// entry is one audit record, filled in as the request proceeds.
type entry struct {
	user   User
	action string
	kid    string
	force  bool
	result string
}

// handle authenticates, authorizes, runs fn and writes its answer as JSON, then audits.
func (a *api) handle(action string, fn func(*http.Request, *entry) (int, any)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(r.Context(), a.cfg.RequestTimeout)
		defer cancel()
		r = r.WithContext(ctx)
		e := &entry{action: action, kid: chi.URLParam(r, "kid")}
		status, body, outcome := a.serve(r, e, fn)
		writeJSON(w, status, body)

		attrs := []any{
			"user", e.user.Name, "groups", e.user.Groups, "via", e.user.Via,
			"action", e.action, "method", r.Method, "path", r.URL.Path,
			"status", status, "outcome", outcome,
			"remote", r.RemoteAddr, "duration", time.Since(start).Round(time.Microsecond),
		}
		if e.kid != "" {
			attrs = append(attrs, "kid", e.kid)
		}
		if e.force {
			attrs = append(attrs, "force", true)
		}
		if eb, ok := body.(ErrorBody); ok {
			attrs = append(attrs, "error", eb.Error.Message)
		}
		level := slog.LevelInfo
		if status >= 500 {
			level = slog.LevelError
		}
		a.audit.Log(r.Context(), level, "admin request", attrs...)
	}
}

func (a *api) serve(r *http.Request, e *entry, fn func(*http.Request, *entry) (int, any)) (int, any, string) {
	token, ok := bearerToken(r)
	if !ok {
		s, b := errorResult(http.StatusUnauthorized, "Unauthorized", "a bearer token is required (Authorization: Bearer TOKEN)")
		return s, b, "unauthenticated"
	}
	u, err := a.authn.Authenticate(r.Context(), token)
	switch {
	case errors.Is(err, ErrUnauthenticated):
		s, b := errorResult(http.StatusUnauthorized, "Unauthorized", "the bearer token is not valid")
		return s, b, "unauthenticated"
	case err != nil:
		s, b := errorResult(http.StatusServiceUnavailable, "ServiceUnavailable", "cannot verify the bearer token: "+err.Error())
		return s, b, "error"
	}
	e.user = u
	if !u.Privileged {
		verb := strings.ToLower(r.Method)
		allowed, reason, err := a.cfg.Authorizer.Authorize(r.Context(), u, verb, r.URL.Path)
		if err != nil {
			s, b := errorResult(http.StatusServiceUnavailable, "ServiceUnavailable", "cannot authorize the request: "+err.Error())
			return s, b, "error"
		}
		if !allowed {
			msg := fmt.Sprintf("user %q cannot %s path %q: grant it with a ClusterRole rule nonResourceURLs [%q, %q] verbs [%q]",
				u.Name, verb, r.URL.Path, PathPrefix, PathPrefix+"/*", verb)
			if reason != "" {
				msg += " (" + reason + ")"
			}
			s, b := errorResult(http.StatusForbidden, "Forbidden", msg)
			return s, b, "denied"
		}
	}
	status, body := fn(r, e)
	if status >= 400 {
		return status, body, "failed"
	}
	return status, body, "ok"
}

func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}

func (a *api) list(r *http.Request, _ *entry) (int, any) {
	snap, err := a.cfg.Keys.Snapshot(r.Context())
	if err != nil {
		return lifecycleError(err)
	}
	out := KeyList{
		Keys:        make([]Key, 0, len(snap.State.Keys)),
		StateSecret: snap.StateSecret.String(), SigningSecret: snap.SigningSecret.String(),
		PublishLead: snap.PublishLead.String(), Retention: snap.Retention.String(),
		ControlPlane: controlPlaneView(snap),
	}
	for _, rec := range snap.State.Keys {
		out.Keys = append(out.Keys, keyView(rec, snap))
	}
	return http.StatusOK, out
}

func (a *api) stage(r *http.Request, e *entry) (int, any) {
	var req StageRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return errorResult(http.StatusBadRequest, "BadRequest", "reading the request body: "+err.Error())
	}
	if len(body) > maxBody {
		return errorResult(http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "the request body is larger than 64 KiB")
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return errorResult(http.StatusBadRequest, "BadRequest", `the body must be JSON like {"algorithm": "RS256"}: `+err.Error())
		}
	}
	rec, err := a.cfg.Keys.Stage(r.Context(), req.Algorithm)
	if err != nil {
		return lifecycleError(err)
	}
	e.kid, e.result = rec.KID, "staged"
	snap := a.snapshotFor(r.Context())
	return http.StatusCreated, KeyResult{Key: keyView(rec, snap), Result: "staged",
		Note: "published in the JWKS from now on; promote it once relying parties have had the publish lead (" + snap.PublishLead.String() + ") to fetch it"}
}

func (a *api) promote(r *http.Request, e *entry) (int, any) {
	force, err := forceParam(r)
	if err != nil {
		return errorResult(http.StatusBadRequest, "BadRequest", err.Error())
	}
	e.force = force
	rec, err := a.cfg.Keys.Promote(r.Context(), e.kid, force)
	if err != nil {
		return lifecycleError(err)
	}
	e.result = "promoted"
	snap := a.snapshotFor(r.Context())
	return http.StatusOK, KeyResult{Key: keyView(rec, snap), Result: "promoted", Note: promoteNote + signingNote(rec.KID, snap), ControlPlane: controlPlaneView(snap)}
}

// signingNote completes the promote note with what the control plane signs with right now.
func signingNote(promoted string, snap lifecycle.Snapshot) string {
	obs := snap.State.Signing
	switch {
	case obs.At.IsZero():
		return "; no signing probe observes the control plane, so the outgoing key's retention counts from now: roll the control plane well within it"
	case obs.Signs(promoted) && len(obs.KIDs) == 1:
		return "; the control plane already signs with it"
	}
	var old []string
	for _, kid := range obs.KIDs {
		if kid != promoted {
			old = append(old, kid)
		}
	}
	return fmt.Sprintf("; the control plane was last seen signing with %s at %s: those keys stay published while it does, and for the retention after it stops",
		strings.Join(old, ", "), obs.At.UTC().Format(time.RFC3339))
}

func controlPlaneView(snap lifecycle.Snapshot) *ControlPlaneSigning {
	if snap.State == nil || snap.State.Signing.At.IsZero() {
		return nil
	}
	return &ControlPlaneSigning{ObservedAt: snap.State.Signing.At.UTC(), KIDs: slices.Clone(snap.State.Signing.KIDs)}
}

func (a *api) remove(r *http.Request, e *entry) (int, any) {
	force, err := forceParam(r)
	if err != nil {
		return errorResult(http.StatusBadRequest, "BadRequest", err.Error())
	}
	e.force = force
	rec, how, err := a.cfg.Keys.Remove(r.Context(), e.kid, force)
	if err != nil {
		return lifecycleError(err)
	}
	e.result = string(how)
	res := KeyResult{Key: keyView(rec, a.snapshotFor(r.Context())), Result: string(how)}
	if how == lifecycle.Retired {
		res.Note = "no longer published and removed from the verification bundle; tokens it signed are rejected from now on (by kube-apiserver after it restarts with the Secret's contents)"
	}
	return http.StatusOK, res
}

// snapshotFor returns a snapshot for decorating a result; a failure only loses the decoration.
func (a *api) snapshotFor(ctx context.Context) lifecycle.Snapshot {
	snap, err := a.cfg.Keys.Snapshot(ctx)
	if err != nil {
		return lifecycle.Snapshot{State: &lifecycle.State{}}
	}
	return snap
}

func forceParam(r *http.Request) (bool, error) {
	v := r.URL.Query().Get("force")
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("force=%q: use force=true", v)
	}
	return b, nil
}

func keyView(r lifecycle.Record, snap lifecycle.Snapshot) Key {
	k := Key{
		KID: r.KID, Phase: string(r.Phase), Algorithm: r.Algorithm, PublicKey: string(r.Public.PEM()),
		Created: r.Created.UTC(), InBundle: slices.Contains(snap.Bundle, r.KID),
	}
	opt := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		u := t.UTC()
		return &u
	}
	k.Promoted, k.Retired, k.PublishUntil = opt(r.Promoted), opt(r.Retired), opt(r.PublishUntil)
	k.LastSigned = opt(r.LastSigned)
	k.Signing = snap.State != nil && snap.State.Signing.Signs(r.KID)
	if r.Phase == "staged" {
		k.PromotableAt = opt(r.PromotableAt(snap.PublishLead))
	}
	return k
}

// lifecycleError maps the lifecycle's errors to HTTP.
func lifecycleError(err error) (int, any) {
	switch {
	case errors.Is(err, lifecycle.ErrNotFound):
		return errorResult(http.StatusNotFound, "NotFound", err.Error())
	case errors.Is(err, lifecycle.ErrConflict):
		return errorResult(http.StatusConflict, "Conflict", err.Error())
	case errors.Is(err, lifecycle.ErrInvalid):
		return errorResult(http.StatusBadRequest, "BadRequest", err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return errorResult(http.StatusGatewayTimeout, "Timeout", err.Error())
	}
	return errorResult(http.StatusInternalServerError, "InternalError", err.Error())
}

func errorResult(status int, reason, msg string) (int, any) {
	return status, ErrorBody{Error: ErrorDetail{Status: status, Reason: reason, Message: msg}}
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	b, err := json.MarshalIndent(body, "", "  ")
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"status":500,"reason":"InternalError","message":"encoding the response failed"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="kube-oidc-issuer admin"`)
	}
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
