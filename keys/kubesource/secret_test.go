package kubesource

import (
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"maps"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

type secretCase struct {
	name string
	data map[string][]byte
	// want maps each expected kid to its phase; nil when an error is expected.
	want map[string]keys.Phase
	// unlisted are signing keys missing from the public bundle.
	unlisted []string
	// wantErr are substrings the error must contain.
	wantErr []string
}

type testKeys struct {
	rsa2048, rsa2048b, rsa4096, rsa1024, p256, p384, p224 testKey
}

// generateTestKeys makes the keys of secretCases. Without big, the "4096-bit" key is a 2048-bit
// one: under fuzzing instrumentation a 4096-bit key takes about a minute to generate.
func generateTestKeys(t testing.TB, big bool) testKeys {
	t.Helper()
	bits := 2048
	if big {
		bits = 4096
	}
	return testKeys{
		rsa2048:  newRSAKey(t, 2048),
		rsa2048b: newRSAKey(t, 2048),
		rsa4096:  newRSAKey(t, bits),
		rsa1024:  newRSAKey(t, 1024),
		p256:     newECKey(t, elliptic.P256()),
		p384:     newECKey(t, elliptic.P384()),
		p224:     newECKey(t, elliptic.P224()),
	}
}

func secretCases(t testing.TB, k testKeys) []secretCase {
	t.Helper()
	a, b := k.rsa2048, k.rsa2048b
	active, published := keys.PhaseActive, keys.PhasePublished
	secretLongType := pem.EncodeToMemory(&pem.Block{Type: "SUPER SECRET PASSWORD hunter2 hunter2", Bytes: []byte("x")})
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("0123456789abcdef0123456789")})
	legacyEncrypted := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{
		"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00112233445566778899AABBCCDDEEFF"}, Bytes: []byte("secret-bytes-secret-bytes")})
	return []secretCase{
		// Cluster API / EKS Anywhere.
		{name: "capi rsa2048", data: map[string][]byte{"tls.crt": a.pub, "tls.key": a.priv},
			want: map[string]keys.Phase{a.kid: active}},
		{name: "capi rsa4096", data: map[string][]byte{"tls.crt": k.rsa4096.pub, "tls.key": k.rsa4096.priv},
			want: map[string]keys.Phase{k.rsa4096.kid: active}},
		{name: "capi ecdsa p256", data: map[string][]byte{"tls.crt": k.p256.pub, "tls.key": k.p256.priv},
			want: map[string]keys.Phase{k.p256.kid: active}},
		{name: "capi ecdsa p384 pkcs8", data: map[string][]byte{"tls.crt": k.p384.pub, "tls.key": k.p384.pkcs8},
			want: map[string]keys.Phase{k.p384.kid: active}},
		{name: "capi certificate in tls.crt", data: map[string][]byte{"tls.crt": a.cert, "tls.key": a.priv},
			want: map[string]keys.Phase{a.kid: active}},
		{name: "capi bundle of two, private matches one", data: map[string][]byte{"tls.crt": cat(b.pub, a.pub), "tls.key": a.priv},
			want: map[string]keys.Phase{a.kid: active, b.kid: published}},
		{name: "capi private key not in bundle", data: map[string][]byte{"tls.crt": b.pub, "tls.key": a.priv},
			want: map[string]keys.Phase{a.kid: active, b.kid: published}, unlisted: []string{a.kid}},
		{name: "capi private only", data: map[string][]byte{"tls.key": k.p256.priv},
			want: map[string]keys.Phase{k.p256.kid: active}},
		{name: "capi public only", data: map[string][]byte{"tls.crt": a.pub},
			want: map[string]keys.Phase{a.kid: published}},
		{name: "ec parameters block before key", data: map[string][]byte{"tls.key": cat(
			pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}}), k.p256.priv)},
			want: map[string]keys.Phase{k.p256.kid: active}},
		// kubeadm.
		{name: "kubeadm", data: map[string][]byte{"sa.pub": a.pub, "sa.key": a.priv},
			want: map[string]keys.Phase{a.kid: active}},
		{name: "kubeadm bundle", data: map[string][]byte{"sa.pub": cat(a.pub, b.pub, k.p384.pub), "sa.key": a.priv},
			want: map[string]keys.Phase{a.kid: active, b.kid: published, k.p384.kid: published}},
		{name: "kubeadm private only pkcs8", data: map[string][]byte{"sa.key": k.rsa4096.pkcs8},
			want: map[string]keys.Phase{k.rsa4096.kid: active}},
		// OpenShift.
		{name: "openshift", data: map[string][]byte{"service-account.pub": k.p256.pub, "service-account.key": k.p256.priv},
			want: map[string]keys.Phase{k.p256.kid: active}},
		// Other *.pub entries, and unions.
		{name: "other pub entry only", data: map[string][]byte{"retired-2025.pub": b.pub},
			want: map[string]keys.Phase{b.kid: published}},
		{name: "layouts merged", data: map[string][]byte{"tls.crt": a.pub, "tls.key": a.priv, "sa.pub": b.pub, "old.pub": k.p256.pub, "ca.crt": []byte("ignored")},
			want: map[string]keys.Phase{a.kid: active, b.kid: published, k.p256.kid: published}},
		{name: "same key active in one layout, published in another", data: map[string][]byte{"sa.pub": a.pub, "tls.key": a.priv},
			want: map[string]keys.Phase{a.kid: active}},

		// Errors.
		{name: "garbage private key", data: map[string][]byte{"tls.crt": a.pub, "tls.key": []byte("this is definitely not a PEM encoded private key")},
			wantErr: []string{"kube-system/cluster-sa", "tls.key", "no PEM block"}},
		{name: "garbage public key, good private key", data: map[string][]byte{"tls.crt": []byte("garbage garbage garbage garbage"), "tls.key": a.priv},
			wantErr: []string{"kube-system/cluster-sa", "tls.crt", "no PEM block"}},
		{name: "corrupt DER", data: map[string][]byte{"sa.pub": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("0123456789abcdefghijklmnopqrstuvwxyz")})},
			wantErr: []string{"sa.pub", "PEM block 1 (PUBLIC KEY)"}},
		{name: "second block of bundle bad", data: map[string][]byte{"tls.crt": cat(a.pub, []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")), "tls.key": a.priv},
			wantErr: []string{"tls.crt", "PEM block 2"}},
		{name: "one bad entry rejects the whole secret", data: map[string][]byte{"tls.crt": a.pub, "tls.key": a.priv, "old.pub": []byte("oops")},
			wantErr: []string{"old.pub", "no PEM block"}},
		{name: "empty entry", data: map[string][]byte{"tls.crt": {}, "tls.key": a.priv},
			wantErr: []string{"tls.crt", "empty"}},
		{name: "no data", data: map[string][]byte{},
			wantErr: []string{"kube-system/cluster-sa", "entries [none]", "tls.crt/tls.key", "sa.pub/sa.key", "service-account.pub/service-account.key", "*.pub"}},
		{name: "wrong entries only", data: map[string][]byte{"ca.crt": a.cert, "token": []byte("eyJhbGciOiJSUzI1NiJ9.secret-token-value"), "namespace": []byte("default")},
			wantErr: []string{"entries [ca.crt, namespace, token]", "tls.crt/tls.key (Cluster API / EKS Anywhere)", "sa.pub/sa.key (kubeadm)"}},
		{name: "rsa 1024", data: map[string][]byte{"sa.pub": k.rsa1024.pub, "sa.key": k.rsa1024.priv},
			wantErr: []string{"sa.key", "1024 bits"}},
		{name: "ecdsa p224", data: map[string][]byte{"tls.key": k.p224.priv},
			wantErr: []string{"tls.key", "P-224"}},
		{name: "ed25519", data: map[string][]byte{"sa.pub": ed25519PublicPEM(t)},
			wantErr: []string{"sa.pub", "only RSA and ECDSA"}},
		{name: "unknown pem type is not echoed", data: map[string][]byte{"tls.crt": secretLongType},
			wantErr: []string{"tls.crt", "unsupported PEM block type"}},
		{name: "encrypted pkcs8", data: map[string][]byte{"tls.key": encrypted},
			wantErr: []string{"tls.key", "encrypted"}},
		{name: "legacy encrypted pem", data: map[string][]byte{"sa.key": legacyEncrypted},
			wantErr: []string{"sa.key", "encrypted"}},
		{name: "private key in public entry is fine", data: map[string][]byte{"sa.pub": a.priv},
			want: map[string]keys.Phase{a.kid: published}},
	}
}

func TestKeysFromSecret(t *testing.T) {
	t.Parallel()
	for _, tc := range secretCases(t, generateTestKeys(t, true)) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := secret(tc.data)
			p := parseSecret(s)
			got, err := KeysFromSecret(s)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("KeysFromSecret succeeded with %d keys; want an error containing %q", len(got), tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				if looksLikeKeyMaterial(err.Error()) {
					t.Errorf("error looks like it contains key material: %q", err)
				}
				if leak := leakedInput(err.Error(), tc.data); leak != "" {
					t.Errorf("error %q quotes the secret's data %q", err, leak)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Errorf("error %q echoes a PEM block type from the data", err)
				}
				if got != nil {
					t.Errorf("got keys %v with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("KeysFromSecret: %v", err)
			}
			gotPhases := map[string]keys.Phase{}
			for _, k := range got {
				if _, dup := gotPhases[k.Public.KeyID()]; dup {
					t.Errorf("key %s reported twice", k.Public.KeyID())
				}
				gotPhases[k.Public.KeyID()] = k.Phase
			}
			if !maps.Equal(gotPhases, tc.want) {
				t.Errorf("keys = %v; want %v", gotPhases, tc.want)
			}
			// Active keys come first.
			if !slices.IsSortedFunc(got, func(a, b keys.Key) int {
				return boolInt(a.Phase != keys.PhaseActive) - boolInt(b.Phase != keys.PhaseActive)
			}) {
				t.Errorf("active keys are not first: %v", got)
			}
			if !slices.Equal(p.unlisted, tc.unlisted) {
				t.Errorf("unlisted signing keys = %v; want %v", p.unlisted, tc.unlisted)
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestKeysFromSecretNil(t *testing.T) {
	t.Parallel()
	if _, err := KeysFromSecret(nil); err == nil {
		t.Fatal("KeysFromSecret(nil) succeeded")
	}
}

func TestKeysFromSecretIgnoresStringData(t *testing.T) {
	t.Parallel()
	// StringData is write-only: the API server merges it into Data and never returns it.
	k := newECKey(t, elliptic.P256())
	s := secret(map[string][]byte{"tls.key": k.priv})
	s.StringData = map[string]string{"tls.crt": "garbage"}
	got, err := KeysFromSecret(s)
	if err != nil || len(got) != 1 || got[0].Public.KeyID() != k.kid {
		t.Fatalf("KeysFromSecret = %v, %v; want the one key from Data", got, err)
	}
}

func TestTransformDropsSecretData(t *testing.T) {
	t.Parallel()
	k := newECKey(t, elliptic.P256())
	s := secret(map[string][]byte{"tls.crt": k.pub, "tls.key": k.priv, "other": []byte("unrelated")})
	s.ResourceVersion = "42"
	s.UID = "uid-1"
	s.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": string(k.priv)}
	obj, err := transform(s)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := obj.(*parsedSecret)
	if !ok {
		t.Fatalf("transform returned %T", obj)
	}
	if p.Namespace != "kube-system" || p.Name != "cluster-sa" || p.ResourceVersion != "42" || p.UID != "uid-1" {
		t.Errorf("identity not kept: %+v", p.ObjectMeta)
	}
	if len(p.Annotations) != 0 || len(p.ManagedFields) != 0 {
		t.Errorf("metadata not stripped: %+v", p.ObjectMeta)
	}
	if p.value.err != nil || len(p.value.keys) != 1 || p.value.keys[0].Phase != keys.PhaseActive {
		t.Errorf("parsed = %v, %v", p.value.keys, p.value.err)
	}
	// Idempotent: client-go may hand an already transformed object back.
	again, err := transform(p)
	if err != nil || again != p {
		t.Errorf("transform(transformed) = %v, %v; want the same object", again, err)
	}
	if _, ok := p.DeepCopyObject().(*parsedSecret); !ok {
		t.Error("DeepCopyObject does not return a *parsedSecret")
	}
}

func TestKeysFromSecretWithholdsQuotedData(t *testing.T) {
	t.Parallel()
	// x509 quotes a malformed URI SAN in its error; that text comes from the Secret.
	const uri = "https://leak.example/secret-value-that-must-not-leak/%zz"
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(uri)}})
	if err != nil {
		t.Fatal(err)
	}
	k := newECKey(t, elliptic.P256())
	tmpl := &x509.Certificate{
		SerialNumber:    big.NewInt(2),
		NotBefore:       time.Now(),
		NotAfter:        time.Now().Add(time.Hour),
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: san}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.signer.Public(), k.signer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509.ParseCertificate(der); err == nil || !strings.Contains(err.Error(), "secret-value") {
		t.Fatalf("precondition: x509 no longer quotes the URI (%v); this test needs another quoting error", err)
	}
	data := map[string][]byte{"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	_, err = KeysFromSecret(secret(data))
	if err == nil {
		t.Fatal("KeysFromSecret accepted a malformed certificate")
	}
	if strings.Contains(err.Error(), "secret-value") || leakedInput(err.Error(), data) != "" {
		t.Fatalf("error quotes the secret: %v", err)
	}
	if !strings.Contains(err.Error(), "tls.crt") || !strings.Contains(err.Error(), "withheld") {
		t.Errorf("error %q should name the entry and say details were withheld", err)
	}
}
