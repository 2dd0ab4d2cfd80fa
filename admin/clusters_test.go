package admin

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
)

// rbacRule is a ClusterRole's non-resource rule.
type rbacRule struct {
	urls, verbs []string
}

// allows is kube-apiserver's RBAC evaluation of a non-resource rule (VerbMatches and
// NonResourceURLMatches in k8s.io/kubernetes/pkg/apis/rbac/v1/evaluation_helpers.go): "*" matches
// everything, and a URL ending in "*" matches by string prefix, with no notion of segments, dot
// segments or escaping. That prefix match is what makes a non-plain path dangerous.
func (r rbacRule) allows(verb, path string) bool {
	if !slices.Contains(r.verbs, "*") && !slices.Contains(r.verbs, verb) {
		return false
	}
	for _, u := range r.urls {
		if u == "*" || u == path || (strings.HasSuffix(u, "*") && strings.HasPrefix(path, strings.TrimRight(u, "*"))) {
			return true
		}
	}
	return false
}

// fakeKube is KubeAuth on a fake clientset, as in kubeauth_test.go: TokenReviews map tokens to
// users, SubjectAccessReviews evaluate RBAC rules on the non-resource path asked, and every path
// asked is recorded.
type fakeKube struct {
	*KubeAuth
	mu    sync.Mutex
	asked []string // "verb path" of every SubjectAccessReview
}

func newFakeKube(users map[string]string, rules map[string][]rbacRule) *fakeKube {
	cs := fake.NewClientset()
	fk := &fakeKube{KubeAuth: &KubeAuth{TokenReviews: cs.AuthenticationV1(), SubjectAccessReviews: cs.AuthorizationV1()}}
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		name, ok := users[tr.Spec.Token]
		tr.Status = authenticationv1.TokenReviewStatus{Authenticated: ok, User: authenticationv1.UserInfo{Username: name}}
		return true, tr, nil
	})
	cs.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview)
		nr := sar.Spec.NonResourceAttributes
		fk.mu.Lock()
		fk.asked = append(fk.asked, nr.Verb+" "+nr.Path)
		fk.mu.Unlock()
		sar.Status.Allowed = slices.ContainsFunc(rules[sar.Spec.User], func(r rbacRule) bool { return r.allows(nr.Verb, nr.Path) })
		return true, sar, nil
	})
	return fk
}

func (f *fakeKube) takeAsked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.asked
	f.asked = nil
	return a
}

// fleet is three clusters with separate in-memory lifecycles, each holding one key of its own.
type fleet struct {
	keys   map[string]*fakeKeys // by "namespace/cluster"
	kids   map[string]string
	lookup atomic.Int32
}

func newFleet(t *testing.T, clusters ...string) *fleet {
	f := &fleet{keys: map[string]*fakeKeys{}, kids: map[string]string{}}
	for _, c := range clusters {
		rec, err := lifecycle.NewStagedRecord(lifecycle.AlgorithmES256, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		f.keys[c], f.kids[c] = &fakeKeys{rec: rec}, rec.KID
	}
	return f
}

func (f *fleet) clusters(namespace, cluster string) (Keys, bool) {
	f.lookup.Add(1)
	k, ok := f.keys[namespace+"/"+cluster]
	return k, ok
}

// calls returns every lifecycle call, by cluster, and forgets them.
func (f *fleet) calls() map[string][]string {
	out := map[string][]string{}
	for c, k := range f.keys {
		k.mu.Lock()
		if len(k.calls) > 0 {
			out[c] = k.calls
		}
		k.calls = nil
		k.mu.Unlock()
	}
	return out
}

const (
	alphaPath = "/admin/v1/clusters/team-a/alpha/keys"
	betaPath  = "/admin/v1/clusters/team-a/beta/keys"
	bAlpha    = "/admin/v1/clusters/team-b/alpha/keys"
	// nonPlain is the answer to a path that is not plain.
	nonPlain = `no such admin endpoint: a path has no percent-encoding, no empty, "." or ".." segment, and only letters, digits and "-._~" between its slashes`
)

// escapedPaths are spellings of other paths than alphaPath that start with alphaPath + "/", so that
// RBAC's prefix match of "/admin/v1/clusters/team-a/alpha/keys/*" allows them, yet that a URL
// parser, a router, a proxy or path.Clean may take for team-b/alpha's keys (or another cluster's).
var escapedPaths = []string{
	alphaPath + "/../../../team-b/alpha/keys",
	alphaPath + "/./../../../team-b/alpha/keys",
	alphaPath + "/..%2F..%2F..%2Fteam-b%2Falpha%2Fkeys",
	alphaPath + "/..%2f..%2f..%2fteam-b%2falpha%2fkeys",
	alphaPath + "/%2E%2E/%2E%2E/%2E%2E/team-b/alpha/keys",
	alphaPath + "/%2e%2e/%2e%2e/%2e%2e/team-b/alpha/keys",
	alphaPath + "/%2E%2E%2F%2E%2E%2F%2E%2E%2Fteam-b%2Falpha%2Fkeys",
	alphaPath + "/..%252F..%252F..%252Fteam-b%252Falpha%252Fkeys",
	alphaPath + "/..%5C..%5C..%5Cteam-b%5Calpha%5Ckeys",
	alphaPath + `/..\..\..\team-b\alpha\keys`,
	alphaPath + "/..;/..;/..;/team-b/alpha/keys",
	alphaPath + "//../../../../team-b/alpha/keys",
	alphaPath + "/%00/../../../../team-b/alpha/keys",
	alphaPath + "/" + strings.Repeat("../", 3) + "team-b/alpha/keys/x/promote",
}

// otherSpellings are paths that name a cluster's keys without being plain: the router or the
// decoder would see different names than the path authorized.
var otherSpellings = []string{
	"/admin/v1/clusters/team-%62/alpha/keys",
	"/admin/v1/clusters/team-b%2Falpha/keys",
	"/admin/v1/clusters/team-a/alpha%2Fkeys%2F..%2F..%2F..%2Fteam-b/alpha/keys",
	"//admin/v1/clusters/team-b/alpha/keys",
	"/admin/v1/clusters//team-b/alpha/keys",
	"/admin/v1/clusters/team-b/alpha/keys/",
	"/admin/v1/clusters/team-b/./alpha/keys",
	"/admin/v1/clusters/team-b/alpha/keys;team-a",
	"/admin/v1/clusters/team-b/alpha/%6Beys",
}

func TestFleetRoutes(t *testing.T) {
	dir := t.TempDir()
	staticToken := "static-token-0123456789abcdef"
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(staticToken), 0o600); err != nil {
		t.Fatal(err)
	}
	static, err := LoadStaticToken(filepath.Join(dir, "token"), nil)
	if err != nil {
		t.Fatal(err)
	}
	kube := newFakeKube(
		map[string]string{"alpha-token": "alpha-admin", "viewer-token": "team-a-viewer", "fleet-token": "fleet-admin"},
		map[string][]rbacRule{
			"alpha-admin":   {{urls: []string{alphaPath, alphaPath + "/*"}, verbs: []string{"get", "post", "delete"}}},
			"team-a-viewer": {{urls: []string{"/admin/v1/clusters/team-a/*"}, verbs: []string{"get"}}},
			"fleet-admin":   {{urls: []string{"/admin/*"}, verbs: []string{"*"}}},
		})
	fl := newFleet(t, "team-a/alpha", "team-a/beta", "team-b/alpha")
	kidA, kidB := fl.kids["team-a/alpha"], fl.kids["team-b/alpha"]
	var logs bytes.Buffer
	h, err := NewHandler(Config{Clusters: fl.clusters, Authenticator: kube, Authorizer: kube, StaticToken: static,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	forbidden := func(user, verb, path, grant string) string {
		return fmt.Sprintf("user %q cannot %s path %q: grant it with a ClusterRole rule nonResourceURLs [%q, %q] verbs [%q]", user, verb, path, grant, grant+"/*", verb)
	}
	const fleetNotFound = "no such admin endpoint; this issuer serves a fleet: a cluster's keys are at /admin/v1/clusters/NAMESPACE/CLUSTER/keys"

	type tcase struct {
		name       string
		method     string
		path       string
		token      string
		body       string
		wantStatus int
		wantMsg    string              // the error message, exactly
		wantKID    string              // the kid in a 2xx answer: which cluster's lifecycle answered
		wantCalls  map[string][]string // lifecycle calls by cluster; none elsewhere
		wantAsked  []string            // SubjectAccessReviews, exactly
		wantLookup bool                // whether Clusters was consulted
		wantLogNS  string              // namespace/cluster in the audit line ("" for none)
	}
	tests := []tcase{
		// The right cluster's lifecycle, and only it.
		{name: "list alpha", method: "GET", path: alphaPath, token: "alpha-token", wantStatus: 200, wantKID: kidA,
			wantAsked: []string{"get " + alphaPath}, wantLookup: true, wantLogNS: "team-a/alpha"},
		{name: "stage on alpha", method: "POST", path: alphaPath, token: "alpha-token", body: `{"algorithm":"ES256"}`, wantStatus: 201, wantKID: kidA,
			wantCalls: map[string][]string{"team-a/alpha": {"stage ES256"}}, wantAsked: []string{"post " + alphaPath}, wantLookup: true, wantLogNS: "team-a/alpha"},
		{name: "promote on alpha", method: "POST", path: alphaPath + "/" + kidA + "/promote", token: "alpha-token", wantStatus: 200, wantKID: kidA,
			wantCalls: map[string][]string{"team-a/alpha": {"promote " + kidA + " false"}}, wantAsked: []string{"post " + alphaPath + "/" + kidA + "/promote"}, wantLookup: true, wantLogNS: "team-a/alpha"},
		{name: "remove on alpha with force", method: "DELETE", path: alphaPath + "/" + kidA + "?force=true", token: "alpha-token", wantStatus: 200, wantKID: kidA,
			wantCalls: map[string][]string{"team-a/alpha": {"remove " + kidA + " true"}}, wantAsked: []string{"delete " + alphaPath + "/" + kidA}, wantLookup: true, wantLogNS: "team-a/alpha"},
		{name: "same cluster name, other namespace", method: "POST", path: bAlpha, token: "fleet-token", wantStatus: 201, wantKID: kidB,
			wantCalls: map[string][]string{"team-b/alpha": {"stage "}}, wantAsked: []string{"post " + bAlpha}, wantLookup: true, wantLogNS: "team-b/alpha"},
		{name: "promote on team-b/alpha", method: "POST", path: bAlpha + "/" + kidB + "/promote?force=1", token: "fleet-token", wantStatus: 200, wantKID: kidB,
			wantCalls: map[string][]string{"team-b/alpha": {"promote " + kidB + " true"}}, wantAsked: []string{"post " + bAlpha + "/" + kidB + "/promote"}, wantLookup: true, wantLogNS: "team-b/alpha"},
		{name: "the static token reaches any cluster", method: "DELETE", path: bAlpha + "/" + kidB, token: staticToken, wantStatus: 200, wantKID: kidB,
			wantCalls: map[string][]string{"team-b/alpha": {"remove " + kidB + " false"}}, wantLookup: true, wantLogNS: "team-b/alpha"},
		{name: "a bad force is refused before the lifecycle acts", method: "POST", path: alphaPath + "/" + kidA + "/promote?force=maybe", token: "alpha-token", wantStatus: 400,
			wantMsg: `force="maybe": use force=true`, wantAsked: []string{"post " + alphaPath + "/" + kidA + "/promote"}, wantLookup: true, wantLogNS: "team-a/alpha"},

		// RBAC per cluster: the SubjectAccessReview is on the exact path.
		{name: "alpha's admin cannot list team-b/alpha", method: "GET", path: bAlpha, token: "alpha-token", wantStatus: 403,
			wantMsg: forbidden("alpha-admin", "get", bAlpha, bAlpha), wantAsked: []string{"get " + bAlpha}, wantLogNS: "team-b/alpha"},
		{name: "alpha's admin cannot stage on team-b/alpha", method: "POST", path: bAlpha, token: "alpha-token", wantStatus: 403,
			wantMsg: forbidden("alpha-admin", "post", bAlpha, bAlpha), wantAsked: []string{"post " + bAlpha}, wantLogNS: "team-b/alpha"},
		{name: "alpha's admin cannot promote on team-b/alpha", method: "POST", path: bAlpha + "/" + kidB + "/promote", token: "alpha-token", wantStatus: 403,
			wantMsg: forbidden("alpha-admin", "post", bAlpha+"/"+kidB+"/promote", bAlpha), wantAsked: []string{"post " + bAlpha + "/" + kidB + "/promote"}, wantLogNS: "team-b/alpha"},
		{name: "alpha's admin cannot remove on team-b/alpha", method: "DELETE", path: bAlpha + "/" + kidB, token: "alpha-token", wantStatus: 403,
			wantMsg: forbidden("alpha-admin", "delete", bAlpha+"/"+kidB, bAlpha), wantAsked: []string{"delete " + bAlpha + "/" + kidB}, wantLogNS: "team-b/alpha"},
		{name: "alpha's admin cannot list team-a/beta", method: "GET", path: betaPath, token: "alpha-token", wantStatus: 403,
			wantMsg: forbidden("alpha-admin", "get", betaPath, betaPath), wantAsked: []string{"get " + betaPath}, wantLogNS: "team-a/beta"},
		{name: "alpha's admin cannot stage on team-a/beta", method: "POST", path: betaPath, token: "alpha-token", wantStatus: 403,
			wantMsg: forbidden("alpha-admin", "post", betaPath, betaPath), wantAsked: []string{"post " + betaPath}, wantLogNS: "team-a/beta"},
		{name: "a namespace-wide viewer lists team-a/beta", method: "GET", path: betaPath, token: "viewer-token", wantStatus: 200, wantKID: fl.kids["team-a/beta"],
			wantAsked: []string{"get " + betaPath}, wantLookup: true, wantLogNS: "team-a/beta"},
		{name: "the viewer cannot stage", method: "POST", path: alphaPath, token: "viewer-token", wantStatus: 403,
			wantMsg: forbidden("team-a-viewer", "post", alphaPath, alphaPath), wantAsked: []string{"post " + alphaPath}, wantLogNS: "team-a/alpha"},
		{name: "the viewer cannot list another namespace", method: "GET", path: bAlpha, token: "viewer-token", wantStatus: 403,
			wantMsg: forbidden("team-a-viewer", "get", bAlpha, bAlpha), wantAsked: []string{"get " + bAlpha}, wantLogNS: "team-b/alpha"},

		// Unknown clusters: 404 only to a caller authorized for the path.
		{name: "unknown cluster", method: "GET", path: "/admin/v1/clusters/team-a/gamma/keys", token: "fleet-token", wantStatus: 404,
			wantMsg:   "cluster team-a/gamma is not served by this issuer (no such cluster in the fleet, or no key lifecycle for it)",
			wantAsked: []string{"get /admin/v1/clusters/team-a/gamma/keys"}, wantLookup: true, wantLogNS: "team-a/gamma"},
		{name: "unknown cluster, promote", method: "POST", path: "/admin/v1/clusters/team-c/alpha/keys/" + kidA + "/promote", token: staticToken, wantStatus: 404,
			wantMsg: "cluster team-c/alpha is not served by this issuer (no such cluster in the fleet, or no key lifecycle for it)", wantLookup: true, wantLogNS: "team-c/alpha"},
		{name: "unknown cluster, not authorized: 403", method: "GET", path: "/admin/v1/clusters/team-c/gamma/keys", token: "alpha-token", wantStatus: 403,
			wantMsg:   forbidden("alpha-admin", "get", "/admin/v1/clusters/team-c/gamma/keys", "/admin/v1/clusters/team-c/gamma/keys"),
			wantAsked: []string{"get /admin/v1/clusters/team-c/gamma/keys"}, wantLogNS: "team-c/gamma"},
		{name: "unknown cluster, no token: 401", method: "GET", path: "/admin/v1/clusters/team-c/gamma/keys", wantStatus: 401,
			wantMsg: "a bearer token is required (Authorization: Bearer TOKEN)", wantLogNS: "team-c/gamma"},
		{name: "known cluster, unknown token: 401", method: "GET", path: alphaPath, token: "nope", wantStatus: 401,
			wantMsg: "the bearer token is not valid", wantLogNS: "team-a/alpha"},

		// The single-cluster routes are not served.
		{name: "no single-cluster list", method: "GET", path: PathPrefix, token: "fleet-token", wantStatus: 404, wantMsg: fleetNotFound, wantAsked: []string{"get /admin/v1/keys"}},
		{name: "no single-cluster stage", method: "POST", path: PathPrefix, token: staticToken, wantStatus: 404, wantMsg: fleetNotFound},
		{name: "no single-cluster promote", method: "POST", path: PathPrefix + "/" + kidA + "/promote", token: staticToken, wantStatus: 404, wantMsg: fleetNotFound},
		{name: "no single-cluster remove", method: "DELETE", path: PathPrefix + "/" + kidA, token: "fleet-token", wantStatus: 404, wantMsg: fleetNotFound,
			wantAsked: []string{"delete /admin/v1/keys/" + kidA}},
		{name: "single-cluster path, not authorized: 403", method: "GET", path: PathPrefix, token: "alpha-token", wantStatus: 403,
			wantMsg: forbidden("alpha-admin", "get", PathPrefix, "/admin/v1/clusters/NAMESPACE/CLUSTER/keys"), wantAsked: []string{"get /admin/v1/keys"}},
		{name: "single-cluster path, no token: 401", method: "GET", path: PathPrefix, wantStatus: 401, wantMsg: "a bearer token is required (Authorization: Bearer TOKEN)"},
		{name: "a cluster without keys", method: "GET", path: "/admin/v1/clusters/team-a/alpha", token: "fleet-token", wantStatus: 404, wantMsg: fleetNotFound,
			wantAsked: []string{"get /admin/v1/clusters/team-a/alpha"}},
		{name: "wrong method", method: "PUT", path: alphaPath, token: "fleet-token", wantStatus: 405, wantMsg: "method not allowed",
			wantAsked: []string{"put " + alphaPath}},
	}
	// No spelling of another path under alphaPath+"/" is authorized, routed, or reaches a lifecycle:
	// 404 before any SubjectAccessReview, also for the static token; 401 without a token.
	for _, p := range append(slices.Clone(escapedPaths), otherSpellings...) {
		for _, m := range []string{"GET", "POST", "DELETE"} {
			tests = append(tests,
				tcase{name: "alpha's admin: " + m + " " + p, method: m, path: p, token: "alpha-token", wantStatus: 404, wantMsg: nonPlain, wantLogNS: "*"},
				tcase{name: "static token: " + m + " " + p, method: m, path: p, token: staticToken, wantStatus: 404, wantMsg: nonPlain, wantLogNS: "*"},
			)
		}
		tests = append(tests, tcase{name: "no token: " + p, method: "POST", path: p, wantStatus: 401,
			wantMsg: "a bearer token is required (Authorization: Bearer TOKEN)", wantLogNS: "*"})
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs.Reset()
			fl.lookup.Store(0)
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			calls, asked := fl.calls(), kube.takeAsked()
			if tc.wantCalls == nil {
				tc.wantCalls = map[string][]string{}
			}
			if fmt.Sprint(calls) != fmt.Sprint(tc.wantCalls) {
				t.Errorf("lifecycle calls %v, want %v", calls, tc.wantCalls)
			}
			if !slices.Equal(asked, tc.wantAsked) {
				t.Errorf("SubjectAccessReviews %q, want %q", asked, tc.wantAsked)
			}
			if got := fl.lookup.Load() > 0; got != tc.wantLookup {
				t.Errorf("Clusters consulted: %v, want %v", got, tc.wantLookup)
			}
			if w.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.wantStatus, w.Body)
			}
			if tc.wantStatus >= 400 {
				want, _ := json.MarshalIndent(ErrorBody{Error: ErrorDetail{Status: tc.wantStatus, Reason: strings.ReplaceAll(http.StatusText(tc.wantStatus), " ", ""), Message: tc.wantMsg}}, "", "  ")
				if got := strings.TrimSpace(w.Body.String()); got != string(want) {
					t.Errorf("body\n got %s\nwant %s", got, want)
				}
			} else {
				var res struct {
					Keys []Key `json:"keys"`
					Key  Key   `json:"key"`
				}
				if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil {
					t.Fatalf("answer %s: %v", w.Body, err)
				}
				got := res.Key.KID
				if len(res.Keys) > 0 {
					got = res.Keys[0].KID
				}
				if got != tc.wantKID {
					t.Errorf("answered with kid %s, want %s (another cluster's lifecycle answered)", got, tc.wantKID)
				}
			}
			var line map[string]any
			if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
				t.Fatalf("audit log %q: %v", logs.String(), err)
			}
			// The path as sent, escaped where it must be (a backslash is not valid in a URL).
			wantPath, _, _ := strings.Cut(tc.path, "?")
			wantPath = strings.ReplaceAll(wantPath, `\`, "%5C")
			if line["status"] != float64(tc.wantStatus) || line["path"] != wantPath {
				t.Errorf("audit line %v: want status %d, path %s as sent", line, tc.wantStatus, wantPath)
			}
			ns, _ := line["namespace"].(string)
			cl, _ := line["cluster"].(string)
			switch {
			case tc.wantLogNS == "*":
			case tc.wantLogNS == "" && (line["namespace"] != nil || line["cluster"] != nil):
				t.Errorf("audit line %v names a cluster", line)
			case tc.wantLogNS != "" && ns+"/"+cl != tc.wantLogNS:
				t.Errorf("audit line names cluster %s/%s, want %s", ns, cl, tc.wantLogNS)
			}
		})
	}
}

// A single-cluster issuer serves no cluster routes, whoever asks.
func TestSingleClusterServesNoClusterRoutes(t *testing.T) {
	rec, err := lifecycle.NewStagedRecord(lifecycle.AlgorithmES256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kube := newFakeKube(map[string]string{"root-token": "root"}, map[string][]rbacRule{"root": {{urls: []string{"*"}, verbs: []string{"*"}}}})
	k := &fakeKeys{rec: rec}
	h, err := NewHandler(Config{Keys: k, Authenticator: kube, Authorizer: kube})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ method, path string }{
		{"GET", alphaPath}, {"POST", alphaPath}, {"POST", alphaPath + "/" + rec.KID + "/promote"}, {"DELETE", alphaPath + "/" + rec.KID},
	} {
		req := httptest.NewRequest(tc.method, tc.path, nil)
		req.Header.Set("Authorization", "Bearer root-token")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		want := `{"error":{"status":404,"reason":"NotFound","message":"no such admin endpoint; see /admin/v1/keys"}}`
		var got bytes.Buffer
		_ = json.Compact(&got, w.Body.Bytes())
		if w.Code != 404 || got.String() != want {
			t.Errorf("%s %s: %d %s, want 404 %s", tc.method, tc.path, w.Code, got.String(), want)
		}
	}
	// Non-plain paths are refused in single-cluster mode too, before authorization.
	for _, p := range []string{PathPrefix + "/" + rec.KID + "%2Fpromote", PathPrefix + "/x/../" + rec.KID, PathPrefix + "/"} {
		req := httptest.NewRequest("DELETE", p, nil)
		req.Header.Set("Authorization", "Bearer root-token")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 404 || !strings.Contains(w.Body.String(), "no percent-encoding") {
			t.Errorf("DELETE %s: %d %s, want 404", p, w.Code, w.Body)
		}
	}
	if asked := kube.takeAsked(); len(asked) != 4 {
		t.Errorf("SubjectAccessReviews %q, want one per plain path", asked)
	}
	if len(k.calls) != 0 {
		t.Errorf("lifecycle calls %v", k.calls)
	}
}

func TestNewHandlerWantsExactlyOneLifecycle(t *testing.T) {
	auth := brokenAuth{}
	clusters := func(string, string) (Keys, bool) { return nil, false }
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"neither", Config{}, "admin API: no key lifecycle (set Keys, or Clusters in fleet mode)"},
		{"both", Config{Keys: &fakeKeys{}, Clusters: clusters}, "admin API: Keys and Clusters are exclusive (one issuer's lifecycle, or a fleet's)"},
		{"keys", Config{Keys: &fakeKeys{}}, ""},
		{"clusters", Config{Clusters: clusters}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Authenticator, tc.cfg.Authorizer = auth, auth
			_, err := NewHandler(tc.cfg)
			if got := fmt.Sprint(err); (tc.wantErr == "" && err != nil) || (tc.wantErr != "" && got != tc.wantErr) {
				t.Errorf("err %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// withKeys acts on a cluster only when the authorized path names it, whatever the route says.
func TestWithKeysTakesTheClusterOfTheAuthorizedPath(t *testing.T) {
	fl := newFleet(t, "team-a/alpha", "team-b/alpha")
	a := &api{cfg: Config{Clusters: fl.clusters}}
	ran := false
	fn := a.withKeys(func(*http.Request, Keys, *entry) (int, any) { ran = true; return 200, nil })
	req := httptest.NewRequest("GET", alphaPath, nil)
	for _, e := range []entry{
		{path: alphaPath, namespace: "team-b", cluster: "alpha"},
		{path: alphaPath + "/../../../team-b/alpha/keys", namespace: "team-b", cluster: "alpha"},
		{path: alphaPath + "x", namespace: "team-a", cluster: "alpha"},
		{path: alphaPath, namespace: "team-a/alpha", cluster: "keys"},
		{path: "", namespace: "team-a", cluster: "alpha"},
	} {
		if status, _ := fn(req, &e); status != 404 || ran || fl.lookup.Load() != 0 {
			t.Errorf("%+v: status %d, ran %v, looked up %d", e, status, ran, fl.lookup.Load())
		}
	}
	e := entry{path: alphaPath + "/kid/promote", namespace: "team-a", cluster: "alpha"}
	if status, _ := fn(req, &e); status != 200 || !ran {
		t.Errorf("the authorized cluster: status %d, ran %v", status, ran)
	}
}

// FuzzPlainPath: a path plainPath accepts is the request's path byte for byte, and no decoding or
// cleaning makes another path of it.
func FuzzPlainPath(f *testing.F) {
	for _, p := range append(append([]string{alphaPath, alphaPath + "/kid/promote", "/", "/a/b"}, escapedPaths...), otherSpellings...) {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, target string) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n")))
		if err != nil || !strings.HasPrefix(target, "/") || !plainPath(req.URL) {
			return
		}
		p := req.URL.Path
		if p != strings.SplitN(target, "?", 2)[0] || req.URL.EscapedPath() != p || path.Clean(p) != p {
			t.Fatalf("%q accepted as plain path %q (escaped %q, clean %q)", target, p, req.URL.EscapedPath(), path.Clean(p))
		}
		if u, err := url.PathUnescape(p); err != nil || u != p {
			t.Fatalf("%q accepted as plain, unescapes to %q", p, u)
		}
	})
}

// TestClientCluster: the client targets a cluster of a fleet-mode issuer; the client it came from
// is unchanged.
func TestClientCluster(t *testing.T) {
	fl := newFleet(t, "team-a/alpha", "team-b/alpha")
	kube := newFakeKube(map[string]string{"t": "alpha-admin"},
		map[string][]rbacRule{"alpha-admin": {{urls: []string{alphaPath, alphaPath + "/*", PathPrefix}, verbs: []string{"get", "post", "delete"}}}})
	h, err := NewHandler(Config{Clusters: fl.clusters, Authenticator: kube, Authorizer: kube})
	if err != nil {
		t.Fatal(err)
	}
	var requests atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	c, err := NewClient(srv.URL, srv.Client(), "t")
	if err != nil {
		t.Fatal(err)
	}
	kidA := fl.kids["team-a/alpha"]
	alpha := c.Cluster("team-a", "alpha")
	list, err := alpha.List(t.Context())
	if err != nil || len(list.Keys) != 1 || list.Keys[0].KID != kidA {
		t.Fatalf("list %+v %v", list, err)
	}
	if res, err := alpha.Stage(t.Context(), "ES256"); err != nil || res.Key.KID != kidA {
		t.Fatalf("stage %+v %v", res, err)
	}
	if _, err := alpha.Promote(t.Context(), kidA, true); err != nil {
		t.Fatal(err)
	}
	if _, err := alpha.Remove(t.Context(), kidA, false); err != nil {
		t.Fatal(err)
	}
	calls := fl.calls()
	if want := "map[team-a/alpha:[stage ES256 promote " + kidA + " true remove " + kidA + " false]]"; fmt.Sprint(calls) != want {
		t.Errorf("calls %v, want %s", calls, want)
	}
	if _, err := c.Cluster("team-b", "alpha").Stage(t.Context(), ""); !IsStatus(err, http.StatusForbidden) || !strings.Contains(err.Error(), bAlpha+"/*") {
		t.Errorf("stage on team-b/alpha: %v, want 403 naming the rule to grant", err)
	}
	if _, err := c.List(t.Context()); !IsStatus(err, http.StatusNotFound) {
		t.Errorf("the original client lists %s: %v, want 404 from a fleet", PathPrefix, err)
	}
	if got := kube.takeAsked(); !slices.Equal(got, []string{
		"get " + alphaPath, "post " + alphaPath, "post " + alphaPath + "/" + kidA + "/promote", "delete " + alphaPath + "/" + kidA,
		"post " + bAlpha, "get " + PathPrefix,
	}) {
		t.Errorf("SubjectAccessReviews %q", got)
	}
	before := requests.Load()
	for _, bad := range [][2]string{{"team-a", "../team-b"}, {"", "alpha"}, {"team-a", ""}, {"..", "alpha"}, {"team-a", "al/pha"}, {"team-a", "al%2Fpha"}} {
		if _, err := c.Cluster(bad[0], bad[1]).List(t.Context()); err == nil || !strings.Contains(err.Error(), "must be non-empty names") {
			t.Errorf("Cluster(%q, %q): %v, want a refusal", bad[0], bad[1], err)
		}
	}
	if requests.Load() != before {
		t.Error("a client for a name the API never serves sent a request")
	}
	if len(fl.calls()) != 0 {
		t.Error("a refused call reached a lifecycle")
	}
}
