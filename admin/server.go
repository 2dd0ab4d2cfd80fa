package admin

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"reflect"
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

// Config configures the admin API handler. Exactly one of Keys and Clusters is set.
type Config struct {
	// Keys is the lifecycle of the issuer's one cluster, served at PathPrefix.
	Keys Keys
	// Clusters, in fleet mode, returns the lifecycle of the cluster namespace/cluster, or false
	// when the fleet serves none for it. The lifecycles are served at ClusterPath(namespace,
	// cluster) (ClusterPathPrefix/NAMESPACE/CLUSTER/keys), and PathPrefix is not. It is called
	// once per request, concurrently, only after the caller is authenticated and authorized for
	// the request's path, with names that are plain path segments (see ClusterPath).
	Clusters func(namespace, cluster string) (Keys, bool)
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
//
// A path that is not plain (see ClusterPath: percent-encoding, an empty, "." or ".." segment, a
// character other than letters, digits, '-', '.', '_' and '~') is answered 404 after
// authentication and before authorization: the path authorized is then the request's path byte
// for byte, and it is the very path the request is routed by, so no spelling of a path can be
// authorized as one cluster's and act on another's.
func NewHandler(cfg Config) (http.Handler, error) {
	switch {
	case cfg.Keys == nil && cfg.Clusters == nil:
		return nil, errors.New("admin API: no key lifecycle (set Keys, or Clusters in fleet mode)")
	case cfg.Keys != nil && cfg.Clusters != nil:
		return nil, errors.New("admin API: Keys and Clusters are exclusive (one issuer's lifecycle, or a fleet's)")
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
	prefix, notFound := PathPrefix, "no such admin endpoint; see "+PathPrefix
	if cfg.Clusters != nil {
		prefix = ClusterPathPrefix + "/{namespace}/{cluster}/keys"
		notFound = "no such admin endpoint; this issuer serves a fleet: a cluster's keys are at " + ClusterPath("NAMESPACE", "CLUSTER")
	}
	r := chi.NewRouter()
	r.NotFound(a.handle("unknown", func(*http.Request, *entry) (int, any) {
		return errorResult(http.StatusNotFound, "NotFound", notFound)
	}))
	r.MethodNotAllowed(a.handle("unknown", func(*http.Request, *entry) (int, any) {
		return errorResult(http.StatusMethodNotAllowed, "MethodNotAllowed", "method not allowed")
	}))
	r.Get(prefix, a.handle("list", a.withKeys(a.list)))
	r.Post(prefix, a.handle("stage", a.withKeys(a.stage)))
	r.Post(prefix+"/{kid}/promote", a.handle("promote", a.withKeys(a.promote)))
	r.Delete(prefix+"/{kid}", a.handle("remove", a.withKeys(a.remove)))
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
	// namespace and cluster name the cluster of a fleet-mode route; kid the key of a route.
	namespace, cluster string
	kid                string
	force              bool
	result             string
	// path is the path the caller was authorized for ("" until then).
	path string
}

// internalError is an error answer whose details are for the issuer's log only: handle answers
// the caller with an opaque message carrying the request ID, and logs err under the same ID.
// Every 5xx is one, and so is any error that carries transport details (internal URLs, dial
// errors), which callers — authenticated or not — must never see.
type internalError struct {
	status int
	reason string
	err    error
}

func internalResult(status int, reason string, err error) (int, any) {
	return status, internalError{status: status, reason: reason, err: err}
}

// opaque is the answer to the caller for an internalError (or any other 5xx): what kind of
// failure it was, and nothing about where or why.
func opaque(status int, reason, requestID string) ErrorBody {
	var what string
	switch status {
	case http.StatusInternalServerError:
		what = "the admin API failed to complete the request"
	case http.StatusServiceUnavailable:
		what = "the admin API cannot serve requests right now"
	case http.StatusGatewayTimeout:
		what = "the request took too long"
	default:
		what = "the request failed (" + strings.ToLower(http.StatusText(status)) + ")"
	}
	return ErrorBody{Error: ErrorDetail{Status: status, Reason: reason,
		Message: fmt.Sprintf("%s; see the issuer's log (request id %s)", what, requestID)}}
}

// newRequestID names one request in the answer and the audit log, so that an operator can find
// the details of an opaque error.
func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// handle authenticates, authorizes, runs fn and writes its answer as JSON, then audits.
func (a *api) handle(action string, fn func(*http.Request, *entry) (int, any)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(r.Context(), a.cfg.RequestTimeout)
		defer cancel()
		r = r.WithContext(ctx)
		e := &entry{action: action, kid: chi.URLParam(r, "kid"),
			namespace: chi.URLParam(r, "namespace"), cluster: chi.URLParam(r, "cluster")}
		id := newRequestID()
		status, body, outcome := a.serve(r, e, fn)
		// What the caller is told, and what the log is told.
		var logged string
		switch b := body.(type) {
		case internalError:
			logged, body = b.err.Error(), opaque(status, b.reason, id)
		case ErrorBody:
			logged = b.Error.Message
			if status >= 500 {
				body = opaque(status, b.Error.Reason, id)
			}
		}
		w.Header().Set("X-Request-Id", id)
		writeJSON(w, status, body)

		attrs := []any{
			"requestId", id,
			"user", e.user.Name, "groups", e.user.Groups, "via", e.user.Via,
			"action", e.action, "method", r.Method, "path", r.URL.EscapedPath(),
			"status", status, "outcome", outcome,
			"remote", r.RemoteAddr, "duration", time.Since(start).Round(time.Microsecond),
		}
		if e.namespace != "" || e.cluster != "" {
			attrs = append(attrs, "namespace", e.namespace, "cluster", e.cluster)
		}
		if e.kid != "" {
			attrs = append(attrs, "kid", e.kid)
		}
		if e.force {
			attrs = append(attrs, "force", true)
		}
		if logged != "" {
			attrs = append(attrs, "error", logged)
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
		// The caller is not authenticated yet: it learns that the API is unavailable, never
		// the API server's address or why it cannot be reached.
		s, b := internalResult(http.StatusServiceUnavailable, "ServiceUnavailable", fmt.Errorf("cannot verify the bearer token: %w", err))
		return s, b, "error"
	}
	e.user = u
	// Only a plain path is authorized, and it is the request's path as sent: RBAC matches
	// nonResourceURLs by string prefix, so "/admin/v1/clusters/a/b/keys/*" would allow
	// ".../a/b/keys/../../../c/d/keys", and an escaped "%2F" is one segment to the router but two
	// in the decoded path.
	if !plainPath(r.URL) {
		s, b := errorResult(http.StatusNotFound, "NotFound",
			`no such admin endpoint: a path has no percent-encoding, no empty, "." or ".." segment, and only letters, digits and "-._~" between its slashes`)
		return s, b, "failed"
	}
	path := r.URL.Path
	if !u.Privileged {
		verb := strings.ToLower(r.Method)
		allowed, reason, err := a.cfg.Authorizer.Authorize(r.Context(), u, verb, path)
		if err != nil {
			s, b := internalResult(http.StatusServiceUnavailable, "ServiceUnavailable", fmt.Errorf("cannot authorize the request: %w", err))
			return s, b, "error"
		}
		if !allowed {
			grant := a.grantPath(e)
			msg := fmt.Sprintf("user %q cannot %s path %q: grant it with a ClusterRole rule nonResourceURLs [%q, %q] verbs [%q]",
				u.Name, verb, path, grant, grant+"/*", verb)
			if reason != "" {
				msg += " (" + reason + ")"
			}
			s, b := errorResult(http.StatusForbidden, "Forbidden", msg)
			return s, b, "denied"
		}
	}
	e.path = path
	status, body := fn(r, e)
	if status >= 400 {
		return status, body, "failed"
	}
	return status, body, "ok"
}

// grantPath is the nonResourceURL that a ClusterRole grants for the request's lifecycle.
func (a *api) grantPath(e *entry) string {
	switch {
	case a.cfg.Clusters == nil:
		return PathPrefix
	case e.namespace != "" && e.cluster != "":
		return ClusterPath(e.namespace, e.cluster)
	default:
		return ClusterPath("NAMESPACE", "CLUSTER")
	}
}

// plainPath reports whether u's path is plain: the request's path byte for byte (nothing
// percent-encoded: with RawPath empty, the path as sent is the escaping of Path, which is Path
// itself when every byte is unreserved) and made of plain segments (so no "//", no trailing
// slash, no "." or ".."). Authorizing, routing and logging a plain path all see the same string.
func plainPath(u *url.URL) bool {
	if u.RawPath != "" || u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
		return false
	}
	for seg := range strings.SplitSeq(u.Path[1:], "/") {
		if !plainSegment(seg) {
			return false
		}
	}
	return true
}

// plainSegment reports whether s is a non-empty path segment, other than "." and "..", of only
// RFC 3986 unreserved characters (letters, digits, '-', '.', '_', '~'), which no URL parser,
// router or proxy escapes, unescapes or resolves. Kubernetes names and key IDs (base64url) are.
func plainSegment(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

// withKeys resolves the lifecycle a key route acts on, after authorization, and runs fn on it:
// the issuer's own, or in fleet mode the cluster's that the route names. The cluster is taken
// from the route only when the authorized path names that same cluster.
func (a *api) withKeys(fn func(*http.Request, Keys, *entry) (int, any)) func(*http.Request, *entry) (int, any) {
	return func(r *http.Request, e *entry) (int, any) {
		if a.cfg.Clusters == nil {
			return fn(r, a.cfg.Keys, e)
		}
		base := ClusterPath(e.namespace, e.cluster)
		if rest, ok := strings.CutPrefix(e.path, base); !plainSegment(e.namespace) || !plainSegment(e.cluster) || !ok || (rest != "" && rest[0] != '/') {
			// Unreachable while routing sees the authorized path; refuse rather than guess.
			return errorResult(http.StatusNotFound, "NotFound", "no such admin endpoint")
		}
		k, ok := a.cfg.Clusters(e.namespace, e.cluster)
		if !ok || k == nil {
			return errorResult(http.StatusNotFound, "NotFound",
				fmt.Sprintf("cluster %s/%s is not served by this issuer (no such cluster in the fleet, or no key lifecycle for it)", e.namespace, e.cluster))
		}
		return fn(r, k, e)
	}
}

func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}

func (a *api) list(r *http.Request, k Keys, _ *entry) (int, any) {
	snap, err := k.Snapshot(r.Context())
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

func (a *api) stage(r *http.Request, k Keys, e *entry) (int, any) {
	var req StageRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return errorResult(http.StatusBadRequest, "BadRequest", "reading the request body: "+err.Error())
	}
	if len(body) > maxBody {
		return errorResult(http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "the request body is larger than 64 KiB")
	}
	if err := decodeStrict(body, &req); err != nil {
		return errorResult(http.StatusBadRequest, "BadRequest", `the body must be one JSON object like {"algorithm": "RS256"}, or empty: `+err.Error())
	}
	rec, err := k.Stage(r.Context(), req.Algorithm)
	if err != nil {
		return lifecycleError(err)
	}
	e.kid, e.result = rec.KID, "staged"
	snap := snapshotFor(r.Context(), k)
	return http.StatusCreated, KeyResult{Key: keyView(rec, snap), Result: "staged",
		Note: "published in the JWKS from now on; promote it once relying parties have had the publish lead (" + snap.PublishLead.String() + ") to fetch it"}
}

func (a *api) promote(r *http.Request, k Keys, e *entry) (int, any) {
	force, err := forceParam(r)
	if err != nil {
		return errorResult(http.StatusBadRequest, "BadRequest", err.Error())
	}
	e.force = force
	rec, err := k.Promote(r.Context(), e.kid, force)
	if err != nil {
		return lifecycleError(err)
	}
	e.result = "promoted"
	snap := snapshotFor(r.Context(), k)
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

func (a *api) remove(r *http.Request, k Keys, e *entry) (int, any) {
	force, err := forceParam(r)
	if err != nil {
		return errorResult(http.StatusBadRequest, "BadRequest", err.Error())
	}
	e.force = force
	rec, how, err := k.Remove(r.Context(), e.kid, force)
	if err != nil {
		return lifecycleError(err)
	}
	e.result = string(how)
	res := KeyResult{Key: keyView(rec, snapshotFor(r.Context(), k)), Result: string(how)}
	if how == lifecycle.Retired {
		res.Note = "no longer published and removed from the verification bundle; tokens it signed are rejected from now on (by kube-apiserver after it restarts with the Secret's contents)"
	}
	return http.StatusOK, res
}

// decodeStrict decodes body, when it is not empty, as exactly one JSON object with only known
// fields, each once. Data after the object and repeated fields are refused rather than resolved:
// a body such as {"algorithm":"ES256"}{"algorithm":"HS256"} is ambiguous (a proxy, a log or
// another parser may take the other object or field), and what the caller meant must not be
// guessed.
func decodeStrict(body []byte, v any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil
	}
	if body[0] != '{' {
		return errors.New("it is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	end := dec.InputOffset()
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("data after the object at offset %d", end)
	}
	return exactFields(body, jsonFieldNames(v))
}

// jsonFieldNames are the names v (a pointer to a struct) has in JSON, exactly as spelt.
func jsonFieldNames(v any) map[string]bool {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	names := map[string]bool{}
	if t.Kind() != reflect.Struct {
		return names
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		names[name] = true
	}
	return names
}

// exactFields refuses a JSON object (already decoded once, so well-formed) that names a field
// twice or spells one differently from known: encoding/json would silently keep the last, and it
// matches names regardless of case ({"ALGORITHM": ...} would be taken for "algorithm").
func exactFields(object []byte, known map[string]bool) error {
	dec := json.NewDecoder(bytes.NewReader(object))
	if _, err := dec.Token(); err != nil { // '{'
		return err
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		name, _ := tok.(string)
		if seen[strings.ToLower(name)] {
			return fmt.Errorf("field %q given twice", name)
		}
		if !known[name] {
			return fmt.Errorf("unknown field %q (field names are case-sensitive)", name)
		}
		seen[strings.ToLower(name)] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
	}
	return nil
}

// snapshotFor returns a snapshot of k for decorating a result; a failure only loses the decoration.
func snapshotFor(ctx context.Context, k Keys) lifecycle.Snapshot {
	snap, err := k.Snapshot(ctx)
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

// lifecycleError maps the lifecycle's errors to HTTP. The lifecycle's own 4xx messages tell the
// operator what to do and stay in the answer, unless the error carries transport details.
func lifecycleError(err error) (int, any) {
	status, reason := http.StatusInternalServerError, "InternalError"
	switch {
	case errors.Is(err, lifecycle.ErrNotFound):
		status, reason = http.StatusNotFound, "NotFound"
	case errors.Is(err, lifecycle.ErrConflict):
		status, reason = http.StatusConflict, "Conflict"
	case errors.Is(err, lifecycle.ErrInvalid):
		status, reason = http.StatusBadRequest, "BadRequest"
	case errors.Is(err, context.DeadlineExceeded):
		status, reason = http.StatusGatewayTimeout, "Timeout"
	}
	if status >= 500 || carriesTransportDetails(err) {
		return internalResult(status, reason, err)
	}
	return errorResult(status, reason, err.Error())
}

// carriesTransportDetails reports errors that name internal endpoints or how reaching them
// failed (a client-go request's URL, a dial error, a DNS lookup).
func carriesTransportDetails(err error) bool {
	var ue *url.Error
	var oe *net.OpError
	var de *net.DNSError
	return errors.As(err, &ue) || errors.As(err, &oe) || errors.As(err, &de)
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
