package keys_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// Golden JWK members of the committed testdata keys. n, x and y were extracted with openssl
// (`openssl rsa -pubin -modulus`, the raw EC point of the DER), not with the code under test.
const (
	goldenRSAKID = "1M6azHsVBk47l5Txlez7GbwfpSxG-Uv5mVXrXsx8bDo"
	goldenRSAN   = "qHBN-smTquyFHFcXZeOkhkeA8qj0hGx_4lFa53pT6xBe-xV6ar-r-5EGir41M_5x1yIZqtS2mZj0nLyVSKzGcGvT5rU_sa1cQqC8eoxMqD-nKNjxFagcS3Finj9RhHVhxZnabrwl5hb9GJNnPenq-Mp0E93tkQmIq0sS7BlP5L4_IGE_VCvjp-2HsBedtHE6SNI5ZXE4CNaGG0ZfDLyusnEjMFjV2rlAX6wS9enw42nlenbXzyDnZlkkvk1PXUi6x9YUpMobnRsUCbveeBr2of2NoKNujHrq-m8L0CFHNHekcLrOgxVxO6kGn_DNm-2EeXdXXGOfNRVB8u8PL3--9w"
	goldenECKID  = "-OP9sN_vHlkLO13uuh9o2X1pzvIj1mo69QP29QLi2m8"
	goldenECX    = "tO0Vum-Tge2o7ZlXXCcCLhmBMVN6x3sHJ068_GnH7Jg"
	goldenECY    = "e2_qAjW_USpsqXzrihPNoOcY3Qs8o5Q_4JzZZGyKook"

	goldenRSAJWK = `{"use":"sig","kty":"RSA","kid":"` + goldenRSAKID + `","alg":"RS256","n":"` + goldenRSAN + `","e":"AQAB"}`
	goldenECJWK  = `{"use":"sig","kty":"EC","kid":"` + goldenECKID + `","crv":"P-256","alg":"ES256","x":"` + goldenECX + `","y":"` + goldenECY + `"}`
)

func render(t testing.TB, s keys.Set, opts keys.JWKSOptions) []byte {
	t.Helper()
	b, err := keys.RenderJWKS(s, opts)
	if err != nil {
		t.Fatalf("RenderJWKS: %v", err)
	}
	return b
}

func TestRenderJWKSGolden(t *testing.T) {
	rsaKey := testdataKey(t, "rsa2048.pub.pem")
	ecKey := testdataKey(t, "ecp256.pub.pem")
	tests := []struct {
		name string
		set  keys.Set
		opts keys.JWKSOptions
		want string
	}{
		{"RSA", keys.NewSet(keys.Key{Public: rsaKey, Phase: keys.PhaseActive}), keys.JWKSOptions{},
			`{"keys":[` + goldenRSAJWK + `]}`},
		{"EC P-256", keys.NewSet(keys.Key{Public: ecKey, Phase: keys.PhasePublished}), keys.JWKSOptions{},
			`{"keys":[` + goldenECJWK + `]}`},
		// goldenECKID < goldenRSAKID ('-' sorts before '1'), so kid order puts EC first when both are
		// in the same phase ...
		{"same phase: by kid", keys.NewSet(keys.Key{Public: rsaKey, Phase: keys.PhaseActive}, keys.Key{Public: ecKey, Phase: keys.PhaseActive}), keys.JWKSOptions{},
			`{"keys":[` + goldenECJWK + `,` + goldenRSAJWK + `]}`},
		// ... but an active key comes before every published one.
		{"active before published", keys.NewSet(keys.Key{Public: ecKey, Phase: keys.PhasePublished}, keys.Key{Public: rsaKey, Phase: keys.PhaseActive}), keys.JWKSOptions{},
			`{"keys":[` + goldenRSAJWK + `,` + goldenECJWK + `]}`},
		{"legacy empty kid", keys.NewSet(keys.Key{Public: ecKey, Phase: keys.PhasePublished}, keys.Key{Public: rsaKey, Phase: keys.PhaseActive}), keys.JWKSOptions{LegacyEmptyKID: true},
			`{"keys":[` + goldenRSAJWK + `,` + goldenECJWK + `,` +
				strings.Replace(goldenRSAJWK, goldenRSAKID, "", 1) + `,` + strings.Replace(goldenECJWK, goldenECKID, "", 1) + `]}`},
		{"empty set", keys.Set{}, keys.JWKSOptions{}, `{"keys":[]}`},
		{"empty set, legacy", keys.NewSet(), keys.JWKSOptions{LegacyEmptyKID: true}, `{"keys":[]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := render(t, tc.set, tc.opts)
			if string(got) != tc.want {
				t.Errorf("RenderJWKS =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestRenderJWKSLegacyEmptyKID(t *testing.T) {
	a := mustPublicKey(t, &ecP256().PublicKey)
	b := mustPublicKey(t, &rsa2048A().PublicKey)
	c := mustPublicKey(t, &ecP384().PublicKey)
	s := keys.NewSet(keys.Key{Public: a, Phase: keys.PhasePublished}, keys.Key{Public: b, Phase: keys.PhaseActive}, keys.Key{Public: c, Phase: keys.PhasePublished})
	plain := render(t, s, keys.JWKSOptions{})
	legacy := render(t, s, keys.JWKSOptions{LegacyEmptyKID: true})
	if n := bytes.Count(plain, []byte(`"kid":""`)); n != 0 {
		t.Errorf("plain JWKS has %d empty kids", n)
	}
	if n := bytes.Count(legacy, []byte(`"kid":""`)); n != 3 {
		t.Errorf(`legacy JWKS has %d literal "kid":"", want 3:\n%s`, n, legacy)
	}
	var doc struct{ Keys []map[string]any }
	if err := json.Unmarshal(legacy, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Keys) != 6 {
		t.Fatalf("legacy JWKS has %d keys, want 6", len(doc.Keys))
	}
	ids := s.KeyIDs()
	for i := range 3 {
		orig, dup := doc.Keys[i], doc.Keys[i+3]
		if orig["kid"] != ids[i] {
			t.Errorf("key %d: kid %v, want %s (real keys first, in set order)", i, orig["kid"], ids[i])
		}
		if dup["kid"] != "" {
			t.Errorf("key %d: kid %v, want empty", i+3, dup["kid"])
		}
		dup["kid"] = orig["kid"]
		if a, b := must(json.Marshal(orig)), must(json.Marshal(dup)); !bytes.Equal(a, b) {
			t.Errorf("legacy copy %d differs from its key beyond the kid:\n%s\n%s", i, a, b)
		}
	}
	if !bytes.HasPrefix(legacy, plain[:len(plain)-2]) {
		t.Error("legacy JWKS does not start with the plain keys")
	}
}

func TestRenderJWKSP521Padding(t *testing.T) {
	// The committed P-521 key has x and y of 65 significant bytes: unpadded, they would encode
	// 65 bytes, which go-jose and other strict parsers reject.
	fixed := testdataKey(t, "ecp521.pub.pem")
	pubs := []keys.PublicKey{fixed, mustPublicKey(t, &ecP521().PublicKey)}
	for range 8 {
		pubs = append(pubs, mustPublicKey(t, &mustEC(ecP521().Curve).PublicKey))
	}
	short := 0
	for _, p := range pubs {
		// The uncompressed point 0x04 || X || Y, each coordinate 66 bytes: a leading zero byte is a
		// coordinate shorter than the curve's size.
		point, err := p.Public().(*ecdsa.PublicKey).Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if point[1] == 0 || point[1+66] == 0 {
			short++
		}
		body := render(t, keys.NewSet(keys.Key{Public: p, Phase: keys.PhaseActive}), keys.JWKSOptions{})
		var doc struct {
			Keys []struct{ Crv, Alg, X, Y string }
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatal(err)
		}
		k := doc.Keys[0]
		if k.Crv != "P-521" || k.Alg != "ES512" {
			t.Errorf("crv %q alg %q", k.Crv, k.Alg)
		}
		for name, v := range map[string]string{"x": k.X, "y": k.Y} {
			raw, err := base64.RawURLEncoding.DecodeString(v)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(raw) != 66 {
				t.Errorf("%s of %s decodes to %d bytes, want 66", name, p, len(raw))
			}
		}
	}
	if short == 0 {
		t.Fatal("no P-521 key with a short coordinate was tested")
	}
}

func TestRenderJWKSDeterministic(t *testing.T) {
	var ks []keys.Key
	for i, pub := range []any{&rsa2048A().PublicKey, &rsa2048B().PublicKey, &ecP256().PublicKey, &ecP384().PublicKey, &ecP521().PublicKey, &mustEC(ecP256().Curve).PublicKey} {
		phase := keys.PhasePublished
		if i%2 == 0 {
			phase = keys.PhaseActive
		}
		ks = append(ks, keys.Key{Public: mustPublicKey(t, pub), Phase: phase})
	}
	want := render(t, keys.NewSet(ks...), keys.JWKSOptions{LegacyEmptyKID: true})
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 50 {
		shuffled := append([]keys.Key(nil), ks...)
		// Duplicates must not change anything either.
		shuffled = append(shuffled, ks[rng.IntN(len(ks))])
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if got := render(t, keys.NewSet(shuffled...), keys.JWKSOptions{LegacyEmptyKID: true}); !bytes.Equal(got, want) {
			t.Fatalf("shuffle %d rendered differently:\n%s\nwant\n%s", i, got, want)
		}
	}
	// Active keys come first.
	var doc struct{ Keys []struct{ Kid string } }
	if err := json.Unmarshal(want, &doc); err != nil {
		t.Fatal(err)
	}
	s := keys.NewSet(ks...)
	for i, k := range s.Keys() {
		if doc.Keys[i].Kid != k.Public.KeyID() {
			t.Errorf("position %d: kid %s, want %s", i, doc.Keys[i].Kid, k.Public.KeyID())
		}
		if active := k.Phase == keys.PhaseActive; active != (i < 3) {
			t.Errorf("position %d holds a %s key", i, k.Phase)
		}
	}
}

// TestRenderJWKSGoJoseRoundTrip: a relying party using go-jose reads back exactly our keys.
func TestRenderJWKSGoJoseRoundTrip(t *testing.T) {
	origs := []keys.PublicKey{
		testdataKey(t, "rsa2048.pub.pem"),
		testdataKey(t, "ecp256.pub.pem"),
		testdataKey(t, "ecp521.pub.pem"),
		mustPublicKey(t, &rsa4096().PublicKey),
		mustPublicKey(t, &ecP384().PublicKey),
	}
	var in []keys.Key
	for _, k := range origs {
		in = append(in, keys.Key{Public: k, Phase: keys.PhasePublished})
	}
	s := keys.NewSet(in...)
	body := render(t, s, keys.JWKSOptions{LegacyEmptyKID: true})
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatalf("go-jose cannot parse the JWKS: %v\n%s", err, body)
	}
	if len(set.Keys) != 2*len(origs) {
		t.Fatalf("go-jose read %d keys, want %d", len(set.Keys), 2*len(origs))
	}
	for _, orig := range origs {
		found := set.Key(orig.KeyID())
		if len(found) != 1 {
			t.Fatalf("kid %s: go-jose finds %d keys", orig.KeyID(), len(found))
		}
		jwk := found[0]
		if !jwk.IsPublic() || !jwk.Valid() {
			t.Errorf("%s: IsPublic=%v Valid=%v", orig, jwk.IsPublic(), jwk.Valid())
		}
		if jwk.Algorithm != orig.Algorithm() || jwk.Use != "sig" {
			t.Errorf("%s: alg %q use %q", orig, jwk.Algorithm, jwk.Use)
		}
		var equal bool
		switch p := jwk.Key.(type) {
		case *rsa.PublicKey:
			equal = p.Equal(orig.Public())
		case *ecdsa.PublicKey:
			equal = p.Equal(orig.Public())
		default:
			t.Fatalf("%s: go-jose key is %T", orig, p)
		}
		if !equal {
			t.Errorf("%s: go-jose key differs from the original", orig)
		}
		// go-jose computes the RFC 7638 thumbprint from the same members: it must succeed.
		if _, err := jwk.Thumbprint(crypto.SHA256); err != nil {
			t.Errorf("%s: thumbprint: %v", orig, err)
		}
	}
	legacy := set.Key("")
	if len(legacy) != len(origs) {
		t.Fatalf(`go-jose finds %d keys with kid "", want %d`, len(legacy), len(origs))
	}
	for i, jwk := range legacy {
		if want := s.Keys()[i].Public.Public(); !jwk.Key.(interface{ Equal(crypto.PublicKey) bool }).Equal(want) {
			t.Errorf("legacy key %d differs from set key %d", i, i)
		}
	}
}

// TestRenderJWKSNoPrivateMembers: keys read from private key PEMs render with exactly the public
// members.
func TestRenderJWKSNoPrivateMembers(t *testing.T) {
	var all []keys.Key
	for _, data := range [][]byte{
		pemRSAPrivate(rsa2048A()),
		pemPKCS8(rsa2048B()),
		pemECPrivate(ecP256()),
		concat(pemECParameters(ecP384().Curve), pemECPrivate(ecP384())),
		pemPKCS8(ecP521()),
		pemRSAPrivate(rsa4096()),
	} {
		ks, err := keys.ParsePEM("private.pem", data)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ks {
			all = append(all, keys.Key{Public: k, Phase: keys.PhaseActive})
		}
	}
	for _, legacy := range []bool{false, true} {
		body := render(t, keys.NewSet(all...), keys.JWKSOptions{LegacyEmptyKID: legacy})
		checkOnlyPublicMembers(t, body)
		for _, m := range []string{`"d"`, `"p"`, `"q"`, `"dp"`, `"dq"`, `"qi"`, `"k"`, `"oth"`} {
			if bytes.Contains(body, []byte(m+":")) {
				t.Errorf("rendered JWKS contains member %s", m)
			}
		}
	}
}
