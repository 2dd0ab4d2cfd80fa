package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
)

// internalAddr is what must never reach a caller: the address of the API server behind the issuer.
const internalAddr = "10.96.0.1:443"

// dialError is what client-go returns when the API server is down: the request URL and the dial
// error, both internal.
func dialError(path string) error {
	return &url.Error{Op: "Post", URL: "https://" + internalAddr + path, Err: &net.OpError{
		Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.ParseIP("10.96.0.1"), Port: 443},
		Err: errors.New("connect: connection refused"),
	}}
}

// brokenAuth authenticates "ops-token" (or fails with authnErr) and fails every authorization
// with authzErr.
type brokenAuth struct {
	authnErr, authzErr error
}

func (a brokenAuth) Authenticate(_ context.Context, token string) (User, error) {
	if a.authnErr != nil {
		return User{}, a.authnErr
	}
	if token != "ops-token" {
		return User{}, ErrUnauthenticated
	}
	return User{Name: "ops", Via: "tokenreview"}, nil
}

func (a brokenAuth) Authorize(context.Context, User, string, string) (bool, string, error) {
	return a.authzErr == nil, "", a.authzErr
}

// TestErrorAnswers pins every error body: 5xx answers (and errors carrying transport details)
// are opaque and name a request ID, under which the audit log holds the details; the lifecycle's
// own 4xx messages stay, since they tell the operator what to do.
func TestErrorAnswers(t *testing.T) {
	rec, err := lifecycle.NewStagedRecord(lifecycle.AlgorithmES256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tokenReview := dialError("/apis/authentication.k8s.io/v1/tokenreviews")
	tests := []struct {
		name     string
		auth     brokenAuth
		token    string
		keysErr  error
		wantBody string // {id} is the request ID
		wantLog  string // in the audit line's error; "" for none
	}{
		{
			name: "API server down: any bearer token gets an opaque 503", auth: brokenAuth{authnErr: fmt.Errorf("TokenReview: %w", tokenReview)}, token: "anything",
			wantBody: `{"error":{"status":503,"reason":"ServiceUnavailable","message":"the admin API cannot serve requests right now; see the issuer's log (request id {id})"}}`,
			wantLog:  `cannot verify the bearer token: TokenReview: Post "https://10.96.0.1:443/apis/authentication.k8s.io/v1/tokenreviews": dial tcp 10.96.0.1:443: connect: connection refused`,
		},
		{
			name: "authorizer down", auth: brokenAuth{authzErr: fmt.Errorf("SubjectAccessReview: %w", dialError("/apis/authorization.k8s.io/v1/subjectaccessreviews"))}, token: "ops-token",
			wantBody: `{"error":{"status":503,"reason":"ServiceUnavailable","message":"the admin API cannot serve requests right now; see the issuer's log (request id {id})"}}`,
			wantLog:  `cannot authorize the request: SubjectAccessReview: Post "https://10.96.0.1:443/apis/authorization.k8s.io/v1/subjectaccessreviews": dial tcp 10.96.0.1:443: connect: connection refused`,
		},
		{
			name: "lifecycle cannot reach the state Secret", token: "ops-token", keysErr: fmt.Errorf("reading state Secret ns/state: %w", dialError("/api/v1/namespaces/ns/secrets/state")),
			wantBody: `{"error":{"status":500,"reason":"InternalError","message":"the admin API failed to complete the request; see the issuer's log (request id {id})"}}`,
			wantLog:  `reading state Secret ns/state: Post "https://10.96.0.1:443/api/v1/namespaces/ns/secrets/state": dial tcp 10.96.0.1:443: connect: connection refused`,
		},
		{
			name: "lifecycle times out", token: "ops-token", keysErr: fmt.Errorf("updating state Secret ns/state via %s: %w", internalAddr, context.DeadlineExceeded),
			wantBody: `{"error":{"status":504,"reason":"Timeout","message":"the request took too long; see the issuer's log (request id {id})"}}`,
			wantLog:  `updating state Secret ns/state via 10.96.0.1:443: context deadline exceeded`,
		},
		{
			name: "a conflict carrying a dial error is opaque too", token: "ops-token", keysErr: fmt.Errorf("%w: signing-key Secret ns/sa: %w", lifecycle.ErrConflict, dialError("/api/v1/namespaces/ns/secrets/sa")),
			wantBody: `{"error":{"status":409,"reason":"Conflict","message":"the request failed (conflict); see the issuer's log (request id {id})"}}`,
			wantLog:  `conflict: signing-key Secret ns/sa: Post "https://10.96.0.1:443/api/v1/namespaces/ns/secrets/sa": dial tcp 10.96.0.1:443: connect: connection refused`,
		},
		{
			name: "the lifecycle's conflict message is the operator's feedback", token: "ops-token", keysErr: fmt.Errorf("%w: key abc is already staged: promote or withdraw it first", lifecycle.ErrConflict),
			wantBody: `{"error":{"status":409,"reason":"Conflict","message":"conflict: key abc is already staged: promote or withdraw it first"}}`,
			wantLog:  `conflict: key abc is already staged: promote or withdraw it first`,
		},
		{
			name: "no token", auth: brokenAuth{authnErr: tokenReview},
			wantBody: `{"error":{"status":401,"reason":"Unauthorized","message":"a bearer token is required (Authorization: Bearer TOKEN)"}}`,
			wantLog:  `a bearer token is required (Authorization: Bearer TOKEN)`,
		},
		{
			name: "unknown token", token: "nope",
			wantBody: `{"error":{"status":401,"reason":"Unauthorized","message":"the bearer token is not valid"}}`,
			wantLog:  `the bearer token is not valid`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			h, err := NewHandler(Config{Keys: &fakeKeys{err: tc.keysErr, rec: rec}, Authenticator: tc.auth, Authorizer: tc.auth,
				Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest("POST", PathPrefix, nil)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)

			id := w.Header().Get("X-Request-Id")
			if len(id) != 16 {
				t.Fatalf("X-Request-Id %q, want 16 hex digits", id)
			}
			var body bytes.Buffer
			if err := json.Compact(&body, w.Body.Bytes()); err != nil {
				t.Fatalf("body %q: %v", w.Body, err)
			}
			if want := strings.ReplaceAll(tc.wantBody, "{id}", id); body.String() != want {
				t.Errorf("body\n got %s\nwant %s", body.String(), want)
			}
			if strings.Contains(w.Body.String(), "10.96.0.1") || strings.Contains(w.Body.String(), "dial") {
				t.Errorf("the answer leaks internals: %s", w.Body)
			}
			var line struct {
				RequestID string `json:"requestId"`
				Error     string `json:"error"`
			}
			if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
				t.Fatalf("audit log %q: %v", logs.String(), err)
			}
			if line.RequestID != id || line.Error != tc.wantLog {
				t.Errorf("audit line requestId %q error %q, want %q %q", line.RequestID, line.Error, id, tc.wantLog)
			}
		})
	}
}

// TestStageBodyIsStrict: a stage body is one JSON object with known fields, or nothing. Data after
// the object is refused before the lifecycle is asked for anything.
func TestStageBodyIsStrict(t *testing.T) {
	rec, err := lifecycle.NewStagedRecord(lifecycle.AlgorithmES256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	const prefix = `the body must be one JSON object like {"algorithm": "RS256"}, or empty: `
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantMsg    string // for 400
		wantCall   string // for 201
	}{
		{name: "one object", body: `{"algorithm":"ES256"}`, wantStatus: 201, wantCall: "stage ES256"},
		{name: "one object and white space", body: " {\"algorithm\":\"ES256\"}\n\t ", wantStatus: 201, wantCall: "stage ES256"},
		{name: "empty", body: "", wantStatus: 201, wantCall: "stage "},
		{name: "only white space", body: " \n", wantStatus: 201, wantCall: "stage "},
		{name: "empty object", body: "{}", wantStatus: 201, wantCall: "stage "},
		{name: "a second object", body: `{"algorithm":"ES256"}{"algorithm":"HS256"}`, wantStatus: 400, wantMsg: prefix + "data after the object at offset 21"},
		{name: "a second object after white space", body: "{\"algorithm\":\"ES256\"}\n{\"algorithm\":\"HS256\"}", wantStatus: 400, wantMsg: prefix + "data after the object at offset 21"},
		{name: "a stray brace", body: `{"algorithm":"ES256"}}`, wantStatus: 400, wantMsg: prefix + "data after the object at offset 21"},
		{name: "trailing garbage", body: `{"algorithm":"ES256"} x`, wantStatus: 400, wantMsg: prefix + "data after the object at offset 21"},
		{name: "an array", body: `[{"algorithm":"ES256"}]`, wantStatus: 400, wantMsg: prefix + "it is not a JSON object"},
		{name: "null", body: `null`, wantStatus: 400, wantMsg: prefix + "it is not a JSON object"},
		{name: "unknown field", body: `{"alg":"ES256"}`, wantStatus: 400, wantMsg: prefix + `json: unknown field "alg"`},
		{name: "a field twice, in another case", body: `{"algorithm":"ES256","Algorithm":"HS256"}`, wantStatus: 400, wantMsg: prefix + `field "Algorithm" given twice`},
		{name: "a field twice", body: `{"algorithm":"ES256","algorithm":"HS256"}`, wantStatus: 400, wantMsg: prefix + `field "algorithm" given twice`},
		{name: "truncated", body: `{"algorithm":"ES256"`, wantStatus: 400, wantMsg: prefix + "unexpected EOF"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := &fakeKeys{rec: rec}
			auth := brokenAuth{}
			h, err := NewHandler(Config{Keys: k, Authenticator: auth, Authorizer: auth})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest("POST", PathPrefix, strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer ops-token")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.wantStatus, w.Body)
			}
			if tc.wantStatus == 400 {
				var eb ErrorBody
				if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error.Message != tc.wantMsg {
					t.Errorf("message %q (%v), want %q", eb.Error.Message, err, tc.wantMsg)
				}
				if len(k.calls) != 0 {
					t.Errorf("the lifecycle was called for a refused body: %v", k.calls)
				}
				return
			}
			if len(k.calls) != 1 || k.calls[0] != tc.wantCall {
				t.Errorf("calls %v, want [%s]", k.calls, tc.wantCall)
			}
		})
	}
}
