package server

import (
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
)

const (
	discoveryTarget = "/cluster-a/.well-known/openid-configuration"
	jwksTarget      = "/cluster-a/openid/v1/jwks"
)

func documentHeader(contentType string, d documents.Document) http.Header {
	return http.Header{
		"Content-Type":                {contentType},
		"Cache-Control":               {"public, max-age=3600"},
		"Etag":                        {d.ETag},
		"Access-Control-Allow-Origin": {"*"},
		"X-Content-Type-Options":      {"nosniff"},
		"Content-Length":              {strconv.Itoa(len(d.Body))},
	}
}

func notModifiedHeader(d documents.Document) http.Header {
	return http.Header{
		"Cache-Control":               {"public, max-age=3600"},
		"Etag":                        {d.ETag},
		"Access-Control-Allow-Origin": {"*"},
		"X-Content-Type-Options":      {"nosniff"},
	}
}

const (
	notFoundBody         = "404 page not found\n"
	methodNotAllowedBody = "405 method not allowed: the documents answer GET, HEAD and OPTIONS\n"
	unpublishedBody      = "503 documents not published yet: waiting for every key source to deliver its keys\n"
)

func textHeader(body string, extra http.Header) http.Header {
	h := http.Header{
		"Content-Type":           {"text/plain; charset=utf-8"},
		"Content-Length":         {strconv.Itoa(len(body))},
		"X-Content-Type-Options": {"nosniff"},
	}
	maps.Copy(h, extra)
	return h
}

var (
	notFoundHeader         = textHeader(notFoundBody, nil)
	methodNotAllowedHeader = textHeader(methodNotAllowedBody, http.Header{
		"Allow":                       {"GET, HEAD, OPTIONS"},
		"Access-Control-Allow-Origin": {"*"},
	})
	unpublishedHeader = textHeader(unpublishedBody, http.Header{
		"Retry-After":                 {"5"},
		"Cache-Control":               {"no-store"},
		"Access-Control-Allow-Origin": {"*"},
	})
	preflightHeader = http.Header{
		"Allow":                        {"GET, HEAD, OPTIONS"},
		"Access-Control-Allow-Origin":  {"*"},
		"Access-Control-Allow-Methods": {"GET, HEAD"},
		"Access-Control-Allow-Headers": {"*"},
		"Access-Control-Max-Age":       {"86400"},
		"X-Content-Type-Options":       {"nosniff"},
	}
)

type publicCase struct {
	name        string
	unpublished bool
	method      string
	target      string
	header      http.Header
	wantCode    int
	// wantHeader and wantBody get the published documents (nil when unpublished).
	wantHeader func(*documents.Set) http.Header
	wantBody   func(*documents.Set) string
	wantRoute  string
}

func fixed(h http.Header) func(*documents.Set) http.Header {
	return func(*documents.Set) http.Header { return h }
}
func text(s string) func(*documents.Set) string { return func(*documents.Set) string { return s } }

var (
	discoveryOK = func(d *documents.Set) http.Header { return documentHeader("application/json", d.Discovery) }
	jwksOK      = func(d *documents.Set) http.Header { return documentHeader("application/jwk-set+json", d.JWKS) }
	discovery   = func(d *documents.Set) string { return string(d.Discovery.Body) }
	jwks        = func(d *documents.Set) string { return string(d.JWKS.Body) }
	jwks304     = func(d *documents.Set) http.Header { return notModifiedHeader(d.JWKS) }
	noBody      = text("")
)

// inm builds an If-None-Match request header; "{jwks}" and "{discovery}" stand for the
// published ETags, which only exist once the test rendered its documents.
func inm(lines ...string) http.Header { return http.Header{"If-None-Match": lines} }

func publicCases() []publicCase {
	return []publicCase{
		{name: "GET discovery", method: "GET", target: discoveryTarget, wantCode: 200, wantHeader: discoveryOK, wantBody: discovery, wantRoute: "discovery"},
		{name: "GET jwks", method: "GET", target: jwksTarget, wantCode: 200, wantHeader: jwksOK, wantBody: jwks, wantRoute: "jwks"},
		{name: "GET jwks with a query", method: "GET", target: jwksTarget + "?x=1", wantCode: 200, wantHeader: jwksOK, wantBody: jwks, wantRoute: "jwks"},
		{name: "HEAD discovery", method: "HEAD", target: discoveryTarget, wantCode: 200, wantHeader: discoveryOK, wantBody: noBody, wantRoute: "discovery"},
		{name: "HEAD jwks", method: "HEAD", target: jwksTarget, wantCode: 200, wantHeader: jwksOK, wantBody: noBody, wantRoute: "jwks"},

		{name: "If-None-Match equal", method: "GET", target: jwksTarget, header: inm("{jwks}"), wantCode: 304, wantHeader: jwks304, wantBody: noBody, wantRoute: "jwks"},
		{name: "If-None-Match list", method: "GET", target: jwksTarget, header: inm(`"a", {jwks}`), wantCode: 304, wantHeader: jwks304, wantBody: noBody, wantRoute: "jwks"},
		{name: "If-None-Match list without spaces", method: "GET", target: jwksTarget, header: inm(`"a",{jwks},"b"`), wantCode: 304, wantHeader: jwks304, wantBody: noBody, wantRoute: "jwks"},
		{name: "If-None-Match repeated field", method: "GET", target: jwksTarget, header: inm(`"a"`, "{jwks}"), wantCode: 304, wantHeader: jwks304, wantBody: noBody, wantRoute: "jwks"},
		{name: "If-None-Match weak", method: "GET", target: jwksTarget, header: inm("W/{jwks}"), wantCode: 304, wantHeader: jwks304, wantBody: noBody, wantRoute: "jwks"},
		{name: "If-None-Match star", method: "GET", target: jwksTarget, header: inm("*"), wantCode: 304, wantHeader: jwks304, wantBody: noBody, wantRoute: "jwks"},
		{name: "If-None-Match on HEAD", method: "HEAD", target: jwksTarget, header: inm("{jwks}"), wantCode: 304, wantHeader: jwks304, wantBody: noBody, wantRoute: "jwks"},
		{name: "If-None-Match on discovery", method: "GET", target: discoveryTarget, header: inm("{discovery}"), wantCode: 304,
			wantHeader: func(d *documents.Set) http.Header { return notModifiedHeader(d.Discovery) }, wantBody: noBody, wantRoute: "discovery"},
		{name: "If-None-Match other tag", method: "GET", target: jwksTarget, header: inm(`"other"`), wantCode: 200, wantHeader: jwksOK, wantBody: jwks, wantRoute: "jwks"},
		{name: "If-None-Match the other document's tag", method: "GET", target: jwksTarget, header: inm("{discovery}"), wantCode: 200, wantHeader: jwksOK, wantBody: jwks, wantRoute: "jwks"},
		{name: "If-None-Match unquoted", method: "GET", target: jwksTarget, header: inm("{jwks-unquoted}"), wantCode: 200, wantHeader: jwksOK, wantBody: jwks, wantRoute: "jwks"},

		{name: "POST jwks", method: "POST", target: jwksTarget, wantCode: 405, wantHeader: fixed(methodNotAllowedHeader), wantBody: text(methodNotAllowedBody), wantRoute: "jwks"},
		{name: "PUT discovery", method: "PUT", target: discoveryTarget, wantCode: 405, wantHeader: fixed(methodNotAllowedHeader), wantBody: text(methodNotAllowedBody), wantRoute: "discovery"},
		{name: "DELETE jwks", method: "DELETE", target: jwksTarget, wantCode: 405, wantHeader: fixed(methodNotAllowedHeader), wantBody: text(methodNotAllowedBody), wantRoute: "jwks"},
		{name: "unknown method on jwks", method: "PROPFIND", target: jwksTarget, wantCode: 405, wantHeader: fixed(methodNotAllowedHeader), wantBody: text(methodNotAllowedBody), wantRoute: "jwks"},
		{name: "OPTIONS preflight jwks", method: "OPTIONS", target: jwksTarget,
			header:   http.Header{"Origin": {"https://app.example"}, "Access-Control-Request-Method": {"GET"}, "Access-Control-Request-Headers": {"traceparent"}},
			wantCode: 204, wantHeader: fixed(preflightHeader), wantBody: noBody, wantRoute: "jwks"},
		{name: "OPTIONS discovery", method: "OPTIONS", target: discoveryTarget, wantCode: 204, wantHeader: fixed(preflightHeader), wantBody: noBody, wantRoute: "discovery"},

		{name: "root", method: "GET", target: "/", wantCode: 404, wantHeader: fixed(notFoundHeader), wantBody: text(notFoundBody), wantRoute: "other"},
		{name: "issuer path itself", method: "GET", target: "/cluster-a", wantCode: 404, wantHeader: fixed(notFoundHeader), wantBody: text(notFoundBody), wantRoute: "other"},
		{name: "jwks without the issuer prefix", method: "GET", target: "/openid/v1/jwks", wantCode: 404, wantHeader: fixed(notFoundHeader), wantBody: text(notFoundBody), wantRoute: "other"},
		{name: "discovery without the issuer prefix", method: "GET", target: "/.well-known/openid-configuration", wantCode: 404, wantHeader: fixed(notFoundHeader), wantBody: text(notFoundBody), wantRoute: "other"},
		{name: "jwks under another prefix", method: "GET", target: "/cluster-b/openid/v1/jwks", wantCode: 404, wantHeader: fixed(notFoundHeader), wantBody: text(notFoundBody), wantRoute: "other"},
		{name: "jwks under a longer prefix", method: "GET", target: "/cluster-ab/openid/v1/jwks", wantCode: 404, wantHeader: fixed(notFoundHeader), wantBody: text(notFoundBody), wantRoute: "other"},
		{name: "jwks with a trailing slash", method: "GET", target: jwksTarget + "/", wantCode: 404, wantHeader: fixed(notFoundHeader), wantBody: text(notFoundBody), wantRoute: "other"},
		{name: "below discovery", method: "GET", target: discoveryTarget + "/x", wantCode: 404, wantHeader: fixed(notFoundHeader), wantBody: text(notFoundBody), wantRoute: "other"},
		{name: "double slash", method: "GET", target: "/cluster-a//openid/v1/jwks", wantCode: 404, wantHeader: fixed(notFoundHeader), wantBody: text(notFoundBody), wantRoute: "other"},
		{name: "HEAD of an unknown path", method: "HEAD", target: "/x", wantCode: 404, wantHeader: fixed(notFoundHeader), wantBody: noBody, wantRoute: "other"},
		{name: "POST to an unknown path", method: "POST", target: "/x", wantCode: 404, wantHeader: fixed(notFoundHeader), wantBody: text(notFoundBody), wantRoute: "other"},
		{name: "unknown method on an unknown path", method: "PROPFIND", target: "/x", wantCode: 404, wantHeader: fixed(notFoundHeader), wantBody: text(notFoundBody), wantRoute: "other"},
		{name: "OPTIONS on an unknown path", method: "OPTIONS", target: "/x", wantCode: 404, wantHeader: fixed(notFoundHeader), wantBody: text(notFoundBody), wantRoute: "other"},

		{name: "unpublished GET jwks", unpublished: true, method: "GET", target: jwksTarget, wantCode: 503, wantHeader: fixed(unpublishedHeader), wantBody: text(unpublishedBody), wantRoute: "jwks"},
		{name: "unpublished GET discovery", unpublished: true, method: "GET", target: discoveryTarget, wantCode: 503, wantHeader: fixed(unpublishedHeader), wantBody: text(unpublishedBody), wantRoute: "discovery"},
		{name: "unpublished HEAD jwks", unpublished: true, method: "HEAD", target: jwksTarget, wantCode: 503, wantHeader: fixed(unpublishedHeader), wantBody: noBody, wantRoute: "jwks"},
		{name: "unpublished If-None-Match star", unpublished: true, method: "GET", target: jwksTarget, header: inm("*"), wantCode: 503, wantHeader: fixed(unpublishedHeader), wantBody: text(unpublishedBody), wantRoute: "jwks"},
		{name: "unpublished POST jwks", unpublished: true, method: "POST", target: jwksTarget, wantCode: 405, wantHeader: fixed(methodNotAllowedHeader), wantBody: text(methodNotAllowedBody), wantRoute: "jwks"},
		{name: "unpublished OPTIONS jwks", unpublished: true, method: "OPTIONS", target: jwksTarget, wantCode: 204, wantHeader: fixed(preflightHeader), wantBody: noBody, wantRoute: "jwks"},
		{name: "unpublished unknown path", unpublished: true, method: "GET", target: "/x", wantCode: 404, wantHeader: fixed(notFoundHeader), wantBody: text(notFoundBody), wantRoute: "other"},
	}
}

// TestPublicHandler runs every case through PublicHandler and through the bare chi router, which
// must answer identically: the fast path for the documents is an optimisation, not a second
// route table.
func TestPublicHandler(t *testing.T) {
	handlers := map[string]func(*Server) http.Handler{
		"PublicHandler": (*Server).PublicHandler,
		"chi router":    func(s *Server) http.Handler { return s.publicRouter() },
	}
	for _, tc := range publicCases() {
		for hname, handler := range handlers {
			t.Run(tc.name+"/"+hname, func(t *testing.T) {
				s, _ := newTestServer(t, testIssuer)
				var set *documents.Set
				if !tc.unpublished {
					set = renderTestSet(t, testIssuer, 1)
					s.Publish(set)
				}
				req := httptest.NewRequest(tc.method, tc.target, nil)
				for k, vs := range tc.header {
					for _, v := range vs {
						req.Header.Add(k, expandETags(v, set))
					}
				}
				rec := httptest.NewRecorder()
				handler(s).ServeHTTP(rec, req)
				res := rec.Result()
				body, _ := io.ReadAll(res.Body)

				if res.StatusCode != tc.wantCode {
					t.Errorf("status = %d, want %d", res.StatusCode, tc.wantCode)
				}
				if want := tc.wantHeader(set); !headersEqual(res.Header, want) {
					t.Errorf("header =\n%v\nwant\n%v", res.Header, want)
				}
				if want := tc.wantBody(set); string(body) != want {
					t.Errorf("body = %q, want %q", body, want)
				}
				assertOnlyRequestCounted(t, s, tc.wantRoute, strconv.Itoa(tc.wantCode))
			})
		}
	}
}

func expandETags(v string, set *documents.Set) string {
	if set == nil {
		return v
	}
	return strings.NewReplacer(
		"{jwks}", set.JWKS.ETag,
		"{discovery}", set.Discovery.ETag,
		"{jwks-unquoted}", strings.Trim(set.JWKS.ETag, `"`),
	).Replace(v)
}

func headersEqual(a, b http.Header) bool {
	return maps.EqualFunc(a, b, slices.Equal)
}

// assertOnlyRequestCounted checks that exactly one request was counted, under route and code.
func assertOnlyRequestCounted(t *testing.T, s *Server, route, code string) {
	t.Helper()
	if got := testutil.ToFloat64(s.metrics.requests.WithLabelValues(route, code)); got != 1 {
		t.Errorf("http_requests_total{route=%q,code=%q} = %v, want 1", route, code, got)
	}
	if got := testutil.CollectAndCount(s.metrics.requests); got != int(numRoutes)*int(numStatuses) {
		t.Errorf("http_requests_total has %d series, want the %d pre-created ones", got, int(numRoutes)*int(numStatuses))
	}
	var total float64
	for r := range numRoutes {
		for c := range numStatuses {
			total += testutil.ToFloat64(s.metrics.requestCounters[r][c])
		}
	}
	if total != 1 {
		t.Errorf("%v requests counted in all, want 1", total)
	}
}

// TestDiscoveryBodyIsTheRenderedDocument pins the served bytes to kube-apiserver's document
// shape, independently of the rendering helper used elsewhere in the tests.
func TestDiscoveryBodyIsTheRenderedDocument(t *testing.T) {
	s, _ := newTestServer(t, testIssuer)
	s.Publish(renderTestSet(t, testIssuer, 1))
	rec := httptest.NewRecorder()
	s.PublicHandler().ServeHTTP(rec, httptest.NewRequest("GET", discoveryTarget, nil))
	const want = `{"issuer":"https://issuer.example/cluster-a","jwks_uri":"https://issuer.example/cluster-a/openid/v1/jwks",` +
		`"response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["ES256"]}`
	if got := rec.Body.String(); got != want {
		t.Errorf("body = %s\nwant   %s", got, want)
	}
}

func TestIssuerPaths(t *testing.T) {
	for _, tc := range []struct {
		issuer, target string
		wantCode       int
	}{
		{"https://issuer.example", "/openid/v1/jwks", 200},
		{"https://issuer.example", "/.well-known/openid-configuration", 200},
		{"https://issuer.example", "/x/openid/v1/jwks", 404},
		{"https://issuer.example/a/b", "/a/b/openid/v1/jwks", 200},
		{"https://issuer.example/a/b", "/a/openid/v1/jwks", 404},
		// An escaped issuer path is served at the request paths that decode to it.
		{"https://issuer.example/a%20b", "/a%20b/openid/v1/jwks", 200},
		{"https://issuer.example/a%2Fb", "/a%2Fb/openid/v1/jwks", 200},
		{"https://issuer.example/a%2Fb", "/a/b/openid/v1/jwks", 404},
	} {
		t.Run(tc.issuer+tc.target, func(t *testing.T) {
			s, _ := newTestServer(t, tc.issuer)
			s.Publish(renderTestSet(t, tc.issuer, 1))
			for _, h := range []http.Handler{s.PublicHandler(), s.publicRouter()} {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", tc.target, nil))
				if rec.Code != tc.wantCode {
					t.Errorf("%T: status = %d, want %d", h, rec.Code, tc.wantCode)
				}
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	for _, issuer := range []string{"http://issuer.example", "https://issuer.example/", "https://issuer.example/{x}", "https://issuer.example/a?b"} {
		if _, err := New(Config{IssuerURL: issuer}); err == nil {
			t.Errorf("New(%q) succeeded, want an error", issuer)
		}
	}
}

// TestPublicOverHTTP checks what only a real connection shows: net/http keeps the explicit
// Content-Length on HEAD and sends no body for HEAD and 304.
func TestPublicOverHTTP(t *testing.T) {
	s, _ := newTestServer(t, testIssuer)
	set := renderTestSet(t, testIssuer, 1)
	s.Publish(set)
	srv := httptest.NewServer(s.PublicHandler())
	defer srv.Close()

	for _, tc := range []struct {
		method, inm string
		wantCode    int
		wantLength  int64
	}{
		{"GET", "", 200, int64(len(set.JWKS.Body))},
		{"HEAD", "", 200, int64(len(set.JWKS.Body))},
		{"GET", set.JWKS.ETag, 304, -1},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+jwksTarget, nil)
		if tc.inm != "" {
			req.Header.Set("If-None-Match", tc.inm)
		}
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.method, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.wantCode {
			t.Errorf("%s %q: status %d, want %d", tc.method, tc.inm, res.StatusCode, tc.wantCode)
		}
		if tc.wantLength >= 0 && res.Header.Get("Content-Length") != strconv.FormatInt(tc.wantLength, 10) {
			t.Errorf("%s: Content-Length %q, want %d", tc.method, res.Header.Get("Content-Length"), tc.wantLength)
		}
		wantBody := ""
		if tc.method == "GET" && tc.wantCode == 200 {
			wantBody = string(set.JWKS.Body)
		}
		if string(body) != wantBody {
			t.Errorf("%s %q: body %q, want %q", tc.method, tc.inm, body, wantBody)
		}
		if res.Header.Get("ETag") != set.JWKS.ETag {
			t.Errorf("%s %q: ETag %q, want %q", tc.method, tc.inm, res.Header.Get("ETag"), set.JWKS.ETag)
		}
	}
}

func TestPublish(t *testing.T) {
	s, _ := newTestServer(t, testIssuer)
	if s.Current() != nil {
		t.Fatal("Current() before Publish is not nil")
	}
	h := s.PublicHandler()
	get := func() string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", jwksTarget, nil))
		return rec.Body.String()
	}
	first := renderTestSet(t, testIssuer, 1)
	second := renderTestSet(t, testIssuer, 2)
	s.Publish(first)
	if s.Current() != first || get() != string(first.JWKS.Body) {
		t.Fatal("first publication not served")
	}
	s.Publish(second)
	if s.Current() != second || get() != string(second.JWKS.Body) {
		t.Fatal("second publication not served")
	}
	s.Publish(first) // older generation: a late caller must not roll back a rotation
	if s.Current() != second {
		t.Error("an older generation replaced the published documents")
	}
	s.Publish(nil)
	if s.Current() != second || get() != string(second.JWKS.Body) {
		t.Error("Publish(nil) changed what is served")
	}
	again := renderTestSet(t, testIssuer, 2)
	s.Publish(again) // same generation: accepted (a re-render)
	if s.Current() != again {
		t.Error("a re-render of the same generation was ignored")
	}
}

// TestPublishConcurrentWithServing checks, under -race, that a response never mixes two
// publications: the body, its ETag and its Content-Length always belong together.
func TestPublishConcurrentWithServing(t *testing.T) {
	s, _ := newTestServer(t, testIssuer)
	sets := make([]*documents.Set, 20)
	valid := make(map[string]string) // ETag -> body
	for i := range sets {
		sets[i] = renderTestSet(t, testIssuer, uint64(i+1))
		valid[sets[i].JWKS.ETag] = string(sets[i].JWKS.Body)
	}
	s.Publish(sets[0])
	h := s.PublicHandler()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", jwksTarget, nil))
				etag := rec.Header().Get("ETag")
				if body, ok := valid[etag]; !ok || body != rec.Body.String() || rec.Header().Get("Content-Length") != strconv.Itoa(len(body)) {
					t.Errorf("inconsistent response: ETag %s, body %q", etag, rec.Body.String())
					return
				}
			}
		})
	}
	for _, set := range sets[1:] {
		s.Publish(set)
	}
	close(stop)
	wg.Wait()
}

func TestIfNoneMatch(t *testing.T) {
	const etag = `"abc"`
	for _, tc := range []struct {
		lines []string
		want  bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{`"abc"`}, true},
		{[]string{`W/"abc"`}, true},
		{[]string{`*`}, true},
		{[]string{`"x", "abc"`}, true},
		{[]string{` "x" ,	"abc" `}, true},
		{[]string{`"x"`, `"abc"`}, true},
		{[]string{`"a,bc", "abc"`}, true}, // a comma inside a tag does not split it
		{[]string{`"a,bc"`}, false},
		{[]string{`"ab"`}, false},
		{[]string{`"abcd"`}, false},
		{[]string{`abc`}, false},
		{[]string{`"abc`}, false},
		{[]string{`x, "abc"`}, false}, // malformed lists are not searched further
		{[]string{`w/"abc"`}, false},  // the weak indicator is case-sensitive
	} {
		if got := ifNoneMatch(tc.lines, etag); got != tc.want {
			t.Errorf("ifNoneMatch(%q) = %v, want %v", tc.lines, got, tc.want)
		}
	}
}
