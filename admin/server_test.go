package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
)

// fakeKeys is an in-memory lifecycle: the admin package's own interface, so a fake is fair game
// here; the real Manager against a real kube-apiserver is exercised by the integration tests.
type fakeKeys struct {
	mu    sync.Mutex
	calls []string
	err   error
	rec   lifecycle.Record
}

func (f *fakeKeys) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return f.err
}

func (f *fakeKeys) Snapshot(context.Context) (lifecycle.Snapshot, error) {
	return lifecycle.Snapshot{State: &lifecycle.State{Keys: []lifecycle.Record{f.rec}}, PublishLead: time.Hour, Retention: 25 * time.Hour,
		StateSecret: lifecycle.Ref{Namespace: "ns", Name: "state"}, SigningSecret: lifecycle.Ref{Namespace: "ns", Name: "sa"}, Bundle: []string{f.rec.KID}}, nil
}

func (f *fakeKeys) Stage(_ context.Context, alg string) (lifecycle.Record, error) {
	return f.rec, f.record("stage " + alg)
}

func (f *fakeKeys) Promote(_ context.Context, kid string, force bool) (lifecycle.Record, error) {
	return f.rec, f.record(fmt.Sprintf("promote %s %v", kid, force))
}

func (f *fakeKeys) Remove(_ context.Context, kid string, force bool) (lifecycle.Record, lifecycle.Removal, error) {
	return f.rec, lifecycle.Withdrawn, f.record(fmt.Sprintf("remove %s %v", kid, force))
}

// tokens maps bearer tokens to users; allow lists "user verb path" triples that are authorized.
type fakeAuth struct {
	tokens map[string]User
	allow  map[string]bool
	down   bool
}

func (a *fakeAuth) Authenticate(_ context.Context, token string) (User, error) {
	if a.down {
		return User{}, errors.New("connection refused")
	}
	u, ok := a.tokens[token]
	if !ok {
		return User{}, ErrUnauthenticated
	}
	return u, nil
}

func (a *fakeAuth) Authorize(_ context.Context, u User, verb, path string) (bool, string, error) {
	return a.allow[u.Name+" "+verb+" "+path], "", nil
}

func TestHandler(t *testing.T) {
	rec, err := lifecycle.NewStagedRecord(lifecycle.AlgorithmES256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kid := rec.KID
	dir := t.TempDir()
	staticToken := "static-token-0123456789abcdef"
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(staticToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	static, err := LoadStaticToken(filepath.Join(dir, "token"), nil)
	if err != nil {
		t.Fatal(err)
	}
	auth := &fakeAuth{
		tokens: map[string]User{"ops-token": {Name: "ops", Groups: []string{"ops"}, Via: "tokenreview"}, "viewer-token": {Name: "viewer", Via: "tokenreview"}},
		allow: map[string]bool{
			"ops get /admin/v1/keys": true, "ops post /admin/v1/keys": true,
			"ops post /admin/v1/keys/" + kid + "/promote": true, "ops delete /admin/v1/keys/" + kid: true,
			"viewer get /admin/v1/keys": true,
		},
	}
	tests := []struct {
		name       string
		method     string
		path       string
		token      string
		body       string
		keysErr    error
		authDown   bool
		wantStatus int
		wantReason string
		wantCall   string
	}{
		{name: "no token", method: "GET", path: "/admin/v1/keys", wantStatus: 401, wantReason: "Unauthorized"},
		{name: "unknown token", method: "GET", path: "/admin/v1/keys", token: "nope", wantStatus: 401, wantReason: "Unauthorized"},
		{name: "no token on an unknown path is still 401", method: "GET", path: "/admin/v1/other", wantStatus: 401},
		{name: "authenticator down", method: "GET", path: "/admin/v1/keys", token: "ops-token", authDown: true, wantStatus: 503},
		{name: "viewer lists", method: "GET", path: "/admin/v1/keys", token: "viewer-token", wantStatus: 200},
		{name: "viewer cannot stage", method: "POST", path: "/admin/v1/keys", token: "viewer-token", wantStatus: 403, wantReason: "Forbidden"},
		{name: "viewer cannot promote", method: "POST", path: "/admin/v1/keys/" + kid + "/promote", token: "viewer-token", wantStatus: 403},
		{name: "stage RS256 by default", method: "POST", path: "/admin/v1/keys", token: "ops-token", wantStatus: 201, wantCall: "stage "},
		{name: "stage ES256", method: "POST", path: "/admin/v1/keys", token: "ops-token", body: `{"algorithm":"ES256"}`, wantStatus: 201, wantCall: "stage ES256"},
		{name: "stage with a bad body", method: "POST", path: "/admin/v1/keys", token: "ops-token", body: `{"alg":"ES256"}`, wantStatus: 400},
		{name: "stage conflict", method: "POST", path: "/admin/v1/keys", token: "ops-token", keysErr: fmt.Errorf("%w: already staged", lifecycle.ErrConflict), wantStatus: 409, wantReason: "Conflict"},
		{name: "stage unknown algorithm", method: "POST", path: "/admin/v1/keys", token: "ops-token", keysErr: fmt.Errorf("%w: HS256", lifecycle.ErrInvalid), wantStatus: 400},
		{name: "promote", method: "POST", path: "/admin/v1/keys/" + kid + "/promote", token: "ops-token", wantStatus: 200, wantCall: "promote " + kid + " false"},
		{name: "promote with force", method: "POST", path: "/admin/v1/keys/" + kid + "/promote?force=true", token: "ops-token", wantStatus: 200, wantCall: "promote " + kid + " true"},
		{name: "promote with a bad force", method: "POST", path: "/admin/v1/keys/" + kid + "/promote?force=maybe", token: "ops-token", wantStatus: 400},
		{name: "promote unknown", method: "POST", path: "/admin/v1/keys/" + kid + "/promote", token: "ops-token", keysErr: fmt.Errorf("%w: no key", lifecycle.ErrNotFound), wantStatus: 404},
		{name: "delete", method: "DELETE", path: "/admin/v1/keys/" + kid, token: "ops-token", wantStatus: 200, wantCall: "remove " + kid + " false"},
		{name: "backend failure", method: "DELETE", path: "/admin/v1/keys/" + kid, token: "ops-token", keysErr: errors.New("etcd on fire"), wantStatus: 500},
		{name: "static token may do anything", method: "POST", path: "/admin/v1/keys/" + kid + "/promote?force=1", token: staticToken, wantStatus: 200, wantCall: "promote " + kid + " true"},
		{name: "static token with a suffix is not the static token", method: "GET", path: "/admin/v1/keys", token: staticToken + "x", wantStatus: 401},
		{name: "wrong method", method: "PUT", path: "/admin/v1/keys", token: staticToken, wantStatus: 405},
		{name: "unknown path", method: "GET", path: "/admin/v2/keys", token: staticToken, wantStatus: 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			k := &fakeKeys{err: tc.keysErr, rec: rec}
			auth.down = tc.authDown
			h, err := NewHandler(Config{Keys: k, Authenticator: auth, Authorizer: auth, StaticToken: static,
				Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.wantStatus, w.Body)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if tc.wantStatus == 401 && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Error("401 without WWW-Authenticate: Bearer")
			}
			if tc.wantStatus >= 400 {
				var eb ErrorBody
				if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error.Status != tc.wantStatus || eb.Error.Message == "" {
					t.Errorf("error body %s (%v)", w.Body, err)
				}
				if tc.wantReason != "" && eb.Error.Reason != tc.wantReason {
					t.Errorf("reason %q, want %q", eb.Error.Reason, tc.wantReason)
				}
			}
			if (tc.wantStatus == 401 || tc.wantStatus == 403) && len(k.calls) > 0 {
				t.Errorf("the lifecycle was called for a refused request: %v", k.calls)
			}
			if tc.wantCall != "" && (len(k.calls) != 1 || k.calls[0] != tc.wantCall) {
				t.Errorf("calls %v, want [%s]", k.calls, tc.wantCall)
			}
			// Exactly one audit line, with the outcome, never the token.
			var line map[string]any
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &line) != nil {
				t.Fatalf("audit log: %q", logs.String())
			}
			if line["msg"] != "admin request" || line["status"] != float64(tc.wantStatus) || line["outcome"] == "" {
				t.Errorf("audit line %v", line)
			}
			if tc.token != "" && strings.Contains(logs.String(), tc.token) {
				t.Error("the token is in the audit log")
			}
			if tc.wantStatus < 300 && line["user"] == "" {
				t.Errorf("audit line without the caller: %v", line)
			}
		})
	}
}

func TestKeyViewNeverCarriesPrivateKey(t *testing.T) {
	rec, err := lifecycle.NewStagedRecord(lifecycle.AlgorithmES256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(keyView(rec, lifecycle.Snapshot{PublishLead: time.Hour}))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("PRIVATE")) || !bytes.Contains(b, []byte(`"promotableAt"`)) || !bytes.Contains(b, []byte(string(keys.PhaseStaged))) {
		t.Errorf("view %s", b)
	}
}

func TestClientAgainstHandler(t *testing.T) {
	rec, err := lifecycle.NewStagedRecord(lifecycle.AlgorithmES256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKeys{rec: rec}
	auth := &fakeAuth{tokens: map[string]User{"t": {Name: "u"}}, allow: map[string]bool{"u get /admin/v1/keys": true, "u post /admin/v1/keys": true}}
	h, err := NewHandler(Config{Keys: k, Authenticator: auth, Authorizer: auth})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(h)
	defer srv.Close()
	c, err := NewClient(srv.URL, srv.Client(), "t")
	if err != nil {
		t.Fatal(err)
	}
	list, err := c.List(t.Context())
	if err != nil || len(list.Keys) != 1 || list.Keys[0].KID != rec.KID || !list.Keys[0].InBundle || list.PublishLead != "1h0m0s" {
		t.Fatalf("list %+v %v", list, err)
	}
	res, err := c.Stage(t.Context(), "ES256")
	if err != nil || res.Result != "staged" || res.Key.KID != rec.KID {
		t.Fatalf("stage %+v %v", res, err)
	}
	_, err = c.Promote(t.Context(), rec.KID, true)
	if !IsStatus(err, http.StatusForbidden) {
		t.Fatalf("promote without RBAC: %v", err)
	}
	var ae *APIError
	if !errors.As(err, &ae) || !strings.Contains(ae.Message, "nonResourceURLs") {
		t.Errorf("403 message does not say how to grant access: %v", err)
	}
	if k.calls[len(k.calls)-1] != "stage ES256" {
		t.Errorf("calls %v", k.calls)
	}
}

func TestLoadStaticToken(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("tooshort\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadStaticToken(short, nil); err == nil {
		t.Error("a short token was accepted")
	}
	if _, err := LoadStaticToken(filepath.Join(dir, "missing"), nil); err == nil {
		t.Error("a missing file was accepted")
	}
}
