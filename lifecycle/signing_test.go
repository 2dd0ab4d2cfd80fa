package lifecycle

import (
	"errors"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys/kubesource"
)

func secretWith(data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "sa"}, Data: data}
}

func pemOf(rs ...Record) []byte {
	var out []byte
	for _, r := range rs {
		out = append(out, r.Public.PEM()...)
	}
	return out
}

// phasesOf is what kube-oidc-issuer's own Secret source reads from s: kid → phase.
func phasesOf(t *testing.T, s *corev1.Secret) map[string]keys.Phase {
	t.Helper()
	ks, err := kubesource.KeysFromSecret(s)
	if err != nil {
		t.Fatalf("the Secret source cannot read the Secret written: %v", err)
	}
	out := map[string]keys.Phase{}
	for _, k := range ks {
		out[k.Public.KeyID()] = k.Phase
	}
	return out
}

func TestPromoteInto(t *testing.T) {
	k := testKeys(t)
	k1, k2, k3, k4 := k["K1"], k["K2"], k["K3"], k["K4"]
	A, P := keys.PhaseActive, keys.PhasePublished
	tests := []struct {
		name        string
		data        map[string][]byte
		promote     Record
		wantChanged bool
		wantErr     error
		// wantPublic is the public entry's kids in order; wantPhases what the Secret source reads.
		publicEntry string
		wantPublic  []string
		wantPhases  map[string]keys.Phase
	}{
		{name: "Cluster API: bundle of new + old", data: map[string][]byte{"tls.crt": pemOf(k1), "tls.key": k1.private}, promote: k2, wantChanged: true,
			publicEntry: "tls.crt", wantPublic: []string{k2.KID, k1.KID}, wantPhases: map[string]keys.Phase{k2.KID: A, k1.KID: P}},
		{name: "Cluster API: an existing bundle is kept", data: map[string][]byte{"tls.crt": pemOf(k1, k3), "tls.key": k1.private}, promote: k2, wantChanged: true,
			publicEntry: "tls.crt", wantPublic: []string{k2.KID, k1.KID, k3.KID}, wantPhases: map[string]keys.Phase{k2.KID: A, k1.KID: P, k3.KID: P}},
		{name: "Cluster API: signing key missing from its bundle is added", data: map[string][]byte{"tls.crt": pemOf(k3), "tls.key": k1.private}, promote: k2, wantChanged: true,
			publicEntry: "tls.crt", wantPublic: []string{k2.KID, k1.KID, k3.KID}, wantPhases: map[string]keys.Phase{k2.KID: A, k1.KID: P, k3.KID: P}},
		{name: "Cluster API: only tls.key", data: map[string][]byte{"tls.key": k1.private}, promote: k2, wantChanged: true,
			publicEntry: "tls.crt", wantPublic: []string{k2.KID, k1.KID}, wantPhases: map[string]keys.Phase{k2.KID: A, k1.KID: P}},
		{name: "kubeadm: sa.pub bundle", data: map[string][]byte{"sa.pub": pemOf(k1), "sa.key": k1.private}, promote: k2, wantChanged: true,
			publicEntry: "sa.pub", wantPublic: []string{k2.KID, k1.KID}, wantPhases: map[string]keys.Phase{k2.KID: A, k1.KID: P}},
		{name: "OpenShift: one key, no bundle", data: map[string][]byte{"service-account.pub": pemOf(k1), "service-account.key": k1.private}, promote: k2, wantChanged: true,
			publicEntry: "service-account.pub", wantPublic: []string{k2.KID}, wantPhases: map[string]keys.Phase{k2.KID: A}},
		{name: "repeated promote changes nothing", data: map[string][]byte{"tls.crt": pemOf(k2, k1), "tls.key": k2.private}, promote: k2, wantChanged: false,
			publicEntry: "tls.crt", wantPublic: []string{k2.KID, k1.KID}, wantPhases: map[string]keys.Phase{k2.KID: A, k1.KID: P}},
		{name: "public keys only: nothing to promote into", data: map[string][]byte{"old.pub": pemOf(k1)}, promote: k2, wantErr: ErrConflict},
		{name: "unreadable bundle is not overwritten", data: map[string][]byte{"tls.crt": []byte("garbage"), "tls.key": k1.private}, promote: k2,
			wantErr: errors.New("any")},
		{name: "a record without private key", data: map[string][]byte{"tls.crt": pemOf(k1), "tls.key": k1.private}, promote: func() Record { r := k4; r.private = nil; return r }(),
			wantErr: errors.New("any")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := secretWith(tc.data)
			changed, err := promoteInto(s, tc.promote)
			if tc.wantErr != nil {
				if err == nil || (errors.Is(tc.wantErr, ErrConflict) && !errors.Is(err, ErrConflict)) {
					t.Fatalf("error = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if changed != tc.wantChanged {
				t.Errorf("changed = %v", changed)
			}
			pubs, err := keys.ParsePEM("entry", s.Data[tc.publicEntry])
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range pubs {
				got = append(got, p.KeyID())
			}
			if !slices.Equal(got, tc.wantPublic) {
				t.Errorf("public entry %v, want %v", got, tc.wantPublic)
			}
			if got := phasesOf(t, s); !mapsEqual(got, tc.wantPhases) {
				t.Errorf("the Secret source reads %v, want %v", got, tc.wantPhases)
			}
		})
	}
}

func TestRemoveFromBundle(t *testing.T) {
	k := testKeys(t)
	k1, k2, k3 := k["K1"], k["K2"], k["K3"]
	tests := []struct {
		name        string
		data        map[string][]byte
		remove      []string
		wantChanged bool
		entry       string
		want        []string
	}{
		{name: "expired key dropped", data: map[string][]byte{"tls.crt": pemOf(k2, k1), "tls.key": k2.private}, remove: []string{k1.KID},
			wantChanged: true, entry: "tls.crt", want: []string{k2.KID}},
		{name: "unlisted key: nothing to do", data: map[string][]byte{"tls.crt": pemOf(k2, k3), "tls.key": k2.private}, remove: []string{k1.KID},
			entry: "tls.crt", want: []string{k2.KID, k3.KID}},
		{name: "the signing key is never dropped", data: map[string][]byte{"sa.pub": pemOf(k2, k1), "sa.key": k2.private}, remove: []string{k2.KID, k1.KID},
			wantChanged: true, entry: "sa.pub", want: []string{k2.KID}},
		{name: "a bundle without the signing key never becomes empty", data: map[string][]byte{"tls.crt": pemOf(k1), "tls.key": k2.private}, remove: []string{k1.KID},
			wantChanged: true, entry: "tls.crt", want: []string{k2.KID}},
		{name: "no public entry", data: map[string][]byte{"tls.key": k2.private}, remove: []string{k1.KID}, entry: "tls.crt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := secretWith(tc.data)
			changed, err := removeFromBundle(s, tc.remove)
			if err != nil {
				t.Fatal(err)
			}
			if changed != tc.wantChanged {
				t.Errorf("changed = %v", changed)
			}
			got, err := bundleKIDs(s)
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Sorted(slices.Values(tc.want))
			if !slices.Equal(got, want) {
				t.Errorf("bundle %v, want %v", got, want)
			}
			if _, err := kubesource.KeysFromSecret(s); err != nil {
				t.Errorf("the Secret source cannot read the result: %v", err)
			}
		})
	}
}

func mapsEqual(a, b map[string]keys.Phase) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
