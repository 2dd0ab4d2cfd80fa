package documents_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// Golden JWKs of the committed testdata keys (values extracted with openssl, see keys/jwks_test.go).
const (
	goldenRSAJWK = `{"use":"sig","kty":"RSA","kid":"1M6azHsVBk47l5Txlez7GbwfpSxG-Uv5mVXrXsx8bDo","alg":"RS256","n":"qHBN-smTquyFHFcXZeOkhkeA8qj0hGx_4lFa53pT6xBe-xV6ar-r-5EGir41M_5x1yIZqtS2mZj0nLyVSKzGcGvT5rU_sa1cQqC8eoxMqD-nKNjxFagcS3Finj9RhHVhxZnabrwl5hb9GJNnPenq-Mp0E93tkQmIq0sS7BlP5L4_IGE_VCvjp-2HsBedtHE6SNI5ZXE4CNaGG0ZfDLyusnEjMFjV2rlAX6wS9enw42nlenbXzyDnZlkkvk1PXUi6x9YUpMobnRsUCbveeBr2of2NoKNujHrq-m8L0CFHNHekcLrOgxVxO6kGn_DNm-2EeXdXXGOfNRVB8u8PL3--9w","e":"AQAB"}`
	goldenECJWK  = `{"use":"sig","kty":"EC","kid":"-OP9sN_vHlkLO13uuh9o2X1pzvIj1mo69QP29QLi2m8","crv":"P-256","alg":"ES256","x":"tO0Vum-Tge2o7ZlXXCcCLhmBMVN6x3sHJ068_GnH7Jg","y":"e2_qAjW_USpsqXzrihPNoOcY3Qs8o5Q_4JzZZGyKook"}`
)

func testdataKey(t testing.TB, name string) keys.PublicKey {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	ks, err := keys.ParsePEM(name, b)
	if err != nil || len(ks) != 1 {
		t.Fatalf("ParsePEM(%s) = %v, %v", name, ks, err)
	}
	return ks[0]
}

// testSet is the committed RSA key (active) and EC P-256 key (published).
func testSet(t testing.TB) keys.Set {
	return keys.NewSet(
		keys.Key{Public: testdataKey(t, "rsa2048.pub.pem"), Phase: keys.PhaseActive},
		keys.Key{Public: testdataKey(t, "ecp256.pub.pem"), Phase: keys.PhasePublished},
	)
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  documents.Config
		ok   bool
	}{
		{"minimal", documents.Config{IssuerURL: "https://a.example"}, true},
		{"jwks uri elsewhere", documents.Config{IssuerURL: "https://a.example", JWKSURI: "https://keys.example.net/a/jwks.json", MaxAge: time.Hour}, true},
		{"bad issuer", documents.Config{IssuerURL: "https://a.example/"}, false},
		{"http jwks uri", documents.Config{IssuerURL: "https://a.example", JWKSURI: "http://keys.example.net/jwks"}, false},
		{"relative jwks uri", documents.Config{IssuerURL: "https://a.example", JWKSURI: "/openid/v1/jwks"}, false},
		{"jwks uri with fragment", documents.Config{IssuerURL: "https://a.example", JWKSURI: "https://keys.example.net/jwks#x"}, false},
		{"negative max-age", documents.Config{IssuerURL: "https://a.example", MaxAge: -time.Second}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestPathPrefix(t *testing.T) {
	tests := map[string]string{
		"https://issuer.example.com":                   "",
		"https://issuer.example.com:8443":              "",
		"https://s3.eu-west-1.amazonaws.com/my-bucket": "/my-bucket",
		"https://issuer.example.com/a/b":               "/a/b",
		"https://issuer.example.com/with%20space":      "/with%20space",
		"https://issuer.example.com/a%2Fb":             "/a%2Fb",
		"https://issuer.example.com/":                  "/",
		"https://issuer example.com/x":                 "",
	}
	for issuer, want := range tests {
		if got := documents.PathPrefix(issuer); got != want {
			t.Errorf("PathPrefix(%q) = %q, want %q", issuer, got, want)
		}
	}
}

func TestRenderDiscoveryGolden(t *testing.T) {
	const tail = `"response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["ES256","RS256"]}`
	tests := []struct {
		name string
		cfg  documents.Config
		want string
	}{
		{"issuer without path", documents.Config{IssuerURL: "https://issuer.example.com", MaxAge: documents.DefaultMaxAge},
			`{"issuer":"https://issuer.example.com","jwks_uri":"https://issuer.example.com/openid/v1/jwks",` + tail},
		{"issuer with path prefix", documents.Config{IssuerURL: "https://s3.eu-west-1.amazonaws.com/my-bucket", MaxAge: documents.DefaultMaxAge},
			`{"issuer":"https://s3.eu-west-1.amazonaws.com/my-bucket","jwks_uri":"https://s3.eu-west-1.amazonaws.com/my-bucket/openid/v1/jwks",` + tail},
		{"jwks uri override", documents.Config{IssuerURL: "https://issuer.example.com", JWKSURI: "https://keys.example.net/cluster-a/jwks.json", MaxAge: documents.DefaultMaxAge},
			`{"issuer":"https://issuer.example.com","jwks_uri":"https://keys.example.net/cluster-a/jwks.json",` + tail},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
			ds, err := documents.Render(tc.cfg, testSet(t), 7, now)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(ds.Discovery.Body); got != tc.want {
				t.Errorf("discovery =\n%s\nwant\n%s", got, tc.want)
			}
			if got, want := string(ds.JWKS.Body), `{"keys":[`+goldenRSAJWK+`,`+goldenECJWK+`]}`; got != want {
				t.Errorf("JWKS =\n%s\nwant\n%s", got, want)
			}
			d, j := ds.Discovery, ds.JWKS
			if d.Path != "/.well-known/openid-configuration" || j.Path != "/openid/v1/jwks" {
				t.Errorf("paths %q %q", d.Path, j.Path)
			}
			if d.ContentType != "application/json" || j.ContentType != "application/jwk-set+json" {
				t.Errorf("content types %q %q", d.ContentType, j.ContentType)
			}
			if d.CacheControl != "public, max-age=3600" || j.CacheControl != "public, max-age=3600" {
				t.Errorf("cache control %q %q", d.CacheControl, j.CacheControl)
			}
			if ds.Generation != 7 || !ds.Rendered.Equal(now) || !ds.Keys.Equal(testSet(t)) {
				t.Errorf("generation %d rendered %v keys %v", ds.Generation, ds.Rendered, ds.Keys.KeyIDs())
			}
		})
	}
}

// TestRenderDiscoveryMembers: exactly the members kube-apiserver publishes, algorithms sorted.
func TestRenderDiscoveryMembers(t *testing.T) {
	ds, err := documents.Render(documents.Config{IssuerURL: "https://a.example", MaxAge: time.Hour}, testSet(t), 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(ds.Discovery.Body, &m); err != nil {
		t.Fatal(err)
	}
	want := []string{"id_token_signing_alg_values_supported", "issuer", "jwks_uri", "response_types_supported", "subject_types_supported"}
	if got := slices.Sorted(maps.Keys(m)); !slices.Equal(got, want) {
		t.Errorf("members %v, want %v", got, want)
	}
}

func TestRenderJWKSOptionsPassThrough(t *testing.T) {
	cfg := documents.Config{IssuerURL: "https://a.example", MaxAge: time.Hour, JWKS: keys.JWKSOptions{LegacyEmptyKID: true}}
	ds, err := documents.Render(cfg, testSet(t), 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want, err := keys.RenderJWKS(testSet(t), cfg.JWKS)
	if err != nil {
		t.Fatal(err)
	}
	if string(ds.JWKS.Body) != string(want) || !strings.Contains(string(ds.JWKS.Body), `"kid":""`) {
		t.Errorf("JWKS body %s, want %s", ds.JWKS.Body, want)
	}
}

func TestRenderRefuses(t *testing.T) {
	good := documents.Config{IssuerURL: "https://a.example", MaxAge: time.Hour}
	if ds, err := documents.Render(good, keys.Set{}, 1, time.Now()); err == nil || ds != nil || !strings.Contains(err.Error(), "empty key set") {
		t.Errorf("empty key set: %v, %v", ds, err)
	}
	if ds, err := documents.Render(good, keys.NewSet(keys.Key{}), 1, time.Now()); err == nil || ds != nil {
		t.Errorf("set of zero keys: %v, %v", ds, err)
	}
	bad := documents.Config{IssuerURL: "https://a.example/", MaxAge: time.Hour}
	if ds, err := documents.Render(bad, testSet(t), 1, time.Now()); err == nil || ds != nil || !strings.Contains(err.Error(), "it ends with a slash") {
		t.Errorf("bad issuer: %v, %v", ds, err)
	}
}

func TestRenderCacheControl(t *testing.T) {
	for maxAge, want := range map[time.Duration]string{
		documents.DefaultMaxAge:           "public, max-age=3600",
		5 * time.Minute:                   "public, max-age=300",
		90*time.Second + time.Millisecond: "public, max-age=90",
		24 * time.Hour:                    "public, max-age=86400",
		0:                                 "public, max-age=0",
	} {
		ds, err := documents.Render(documents.Config{IssuerURL: "https://a.example", MaxAge: maxAge}, testSet(t), 1, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if ds.Discovery.CacheControl != want || ds.JWKS.CacheControl != want {
			t.Errorf("max-age %s: %q / %q, want %q", maxAge, ds.Discovery.CacheControl, ds.JWKS.CacheControl, want)
		}
	}
}

var strongETag = regexp.MustCompile(`^"[A-Za-z0-9_-]+"$`)

func TestRenderETagAndDigest(t *testing.T) {
	cfg := documents.Config{IssuerURL: "https://a.example", MaxAge: time.Hour}
	rsaKey := keys.Key{Public: testdataKey(t, "rsa2048.pub.pem"), Phase: keys.PhaseActive}
	ecKey := keys.Key{Public: testdataKey(t, "ecp256.pub.pem"), Phase: keys.PhasePublished}

	a1, err := documents.Render(cfg, keys.NewSet(rsaKey, ecKey), 1, time.Unix(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	// Same keys, other generation, time and input order: same bytes, same tags.
	a2, err := documents.Render(cfg, keys.NewSet(ecKey, rsaKey), 2, time.Unix(2, 0))
	if err != nil {
		t.Fatal(err)
	}
	// Other key set: the JWKS changes; the discovery document too (its algorithms change).
	b, err := documents.Render(cfg, keys.NewSet(rsaKey), 3, time.Unix(3, 0))
	if err != nil {
		t.Fatal(err)
	}
	// Same algorithms, other phase: the JWKS order changes, the discovery document does not.
	c, err := documents.Render(cfg, keys.NewSet(rsaKey, keys.Key{Public: ecKey.Public, Phase: keys.PhaseActive}), 4, time.Unix(4, 0))
	if err != nil {
		t.Fatal(err)
	}
	for _, ds := range []*documents.Set{a1, a2, b, c} {
		for _, d := range []documents.Document{ds.Discovery, ds.JWKS} {
			if !strongETag.MatchString(d.ETag) || strings.HasPrefix(d.ETag, "W/") {
				t.Errorf("ETag %s is not a quoted strong entity tag", d.ETag)
			}
			sum := sha256.Sum256(d.Body)
			if d.SHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("SHA256 %s, want %x", d.SHA256, sum)
			}
		}
	}
	same := func(x, y documents.Document) bool {
		return string(x.Body) == string(y.Body) && x.ETag == y.ETag && x.SHA256 == y.SHA256
	}
	if !same(a1.JWKS, a2.JWKS) || !same(a1.Discovery, a2.Discovery) {
		t.Error("same key set rendered to different documents or tags")
	}
	if b.JWKS.ETag == a1.JWKS.ETag || b.JWKS.SHA256 == a1.JWKS.SHA256 {
		t.Error("JWKS ETag did not change with the body")
	}
	if b.Discovery.ETag == a1.Discovery.ETag {
		t.Error("discovery ETag did not change with the body")
	}
	if string(c.JWKS.Body) == string(a1.JWKS.Body) || c.JWKS.ETag == a1.JWKS.ETag {
		t.Error("JWKS with another order has the same body or ETag")
	}
	if !same(c.Discovery, a1.Discovery) {
		t.Error("discovery document changed although issuer and algorithms did not")
	}
	if a1.Discovery.ETag == a1.JWKS.ETag {
		t.Error("discovery and JWKS share an ETag")
	}
}

func BenchmarkRender(b *testing.B) {
	cfg := documents.Config{IssuerURL: "https://s3.eu-west-1.amazonaws.com/my-bucket", MaxAge: documents.DefaultMaxAge}
	ks := testSet(b)
	now := time.Now()
	b.ReportAllocs()
	var gen uint64
	for b.Loop() {
		gen++
		if _, err := documents.Render(cfg, ks, gen, now); err != nil {
			b.Fatal(err)
		}
	}
}
