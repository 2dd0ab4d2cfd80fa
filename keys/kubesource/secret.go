// Package kubesource reads service-account signing keys from a Kubernetes Secret and watches it
// with a client-go informer scoped to that one Secret.
//
// # Secret layouts
//
// KeysFromSecret recognises these entries (keys of the Secret's data):
//
//   - Cluster API and EKS Anywhere, Secret "<cluster>-sa" (EKS Anywhere: namespace eksa-system):
//     "tls.crt" holds the PUBLIC KEY PEM despite its name (a CERTIFICATE is accepted too, and
//     several blocks form a verification bundle); "tls.key" holds the private signing key.
//   - kubeadm (its files copied into a Secret): "sa.pub" (one or more public keys) and "sa.key".
//   - OpenShift, Secret "next-bound-service-account-signing-key": "service-account.pub" and
//     "service-account.key".
//   - Any other entry whose name ends in ".pub": public keys only, for example a retired key kept
//     for verification.
//
// Several layouts in one Secret are merged. A key whose private half is in the Secret (tls.key,
// sa.key, service-account.key) is [keys.PhaseActive]: it signs tokens. Every other public key is
// [keys.PhasePublished]: it is published for verification only. The public half of a private key is
// always published, even when the Secret's public entry does not list it. Private key material is
// dropped as soon as it has been parsed (see [keys.ParsePEM]); the informer cache holds only the
// resulting public keys.
//
// A Secret with no recognised entry is rejected with an error listing the entry names it has. A
// recognised entry that cannot be parsed rejects the whole Secret, so that a half-understood Secret
// never changes what is published. Errors name the Secret, the entry and the reason; they never
// contain the Secret's data.
package kubesource

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// layout is a pair of Secret entries written by one tool.
type layout struct {
	name    string
	public  string
	private string
}

func knownLayouts() []layout {
	return []layout{
		{name: "Cluster API / EKS Anywhere", public: "tls.crt", private: "tls.key"},
		{name: "kubeadm", public: "sa.pub", private: "sa.key"},
		{name: "OpenShift", public: "service-account.pub", private: "service-account.key"},
	}
}

// parsed is what one Secret yields: its keys, or why it was rejected, plus the key IDs of signing
// keys its public entries do not list (worth a warning: relying parties that read only the
// bundle would not know them).
type parsed struct {
	keys     []keys.Key
	err      error
	unlisted []string
}

// KeysFromSecret returns the public keys held by s, each in its phase, active keys first. See the
// package documentation for the layouts it recognises. It never returns key material in errors.
func KeysFromSecret(s *corev1.Secret) ([]keys.Key, error) {
	p := parseSecret(s)
	return p.keys, p.err
}

func parseSecret(s *corev1.Secret) parsed {
	if s == nil {
		return parsed{err: errors.New("no secret")}
	}
	id := s.Namespace + "/" + s.Name

	type entry struct {
		name    string
		private bool
	}
	var entries []entry
	claimed := map[string]bool{}
	for _, l := range knownLayouts() {
		claimed[l.public], claimed[l.private] = true, true
		if _, ok := s.Data[l.private]; ok {
			entries = append(entries, entry{name: l.private, private: true})
		}
		if _, ok := s.Data[l.public]; ok {
			entries = append(entries, entry{name: l.public})
		}
	}
	names := make([]string, 0, len(s.Data))
	for name := range s.Data {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if !claimed[name] && strings.HasSuffix(name, ".pub") {
			entries = append(entries, entry{name: name})
		}
	}
	if len(entries) == 0 {
		present := "none"
		if len(names) > 0 {
			present = strings.Join(names, ", ")
		}
		var expected []string
		for _, l := range knownLayouts() {
			expected = append(expected, fmt.Sprintf("%s/%s (%s)", l.public, l.private, l.name))
		}
		return parsed{err: fmt.Errorf("secret %s holds no service-account key entry: it has entries [%s]; expected %s, or any *.pub entry",
			id, present, strings.Join(expected, ", "))}
	}

	var active, public []keys.PublicKey
	for _, e := range entries {
		data := s.Data[e.name]
		pubs, err := keys.ParsePEM("entry "+e.name, data)
		if err != nil {
			return parsed{err: fmt.Errorf("rejecting secret %s: %w", id, err)}
		}
		if e.private {
			active = append(active, pubs...)
		} else {
			public = append(public, pubs...)
		}
	}

	out := make([]keys.Key, 0, len(active)+len(public))
	for _, k := range active {
		out = append(out, keys.Key{Public: k, Phase: keys.PhaseActive})
	}
	for _, k := range public {
		out = append(out, keys.Key{Public: k, Phase: keys.PhasePublished})
	}
	// NewSet removes duplicates (a signing key listed in the bundle stays active) and orders the
	// keys deterministically.
	set := keys.NewSet(out...)

	var unlisted []string
	if len(public) > 0 {
		for _, a := range active {
			if !slices.ContainsFunc(public, a.Equal) && !slices.Contains(unlisted, a.KeyID()) {
				unlisted = append(unlisted, a.KeyID())
			}
		}
	}
	return parsed{keys: slices.Clone(set.Keys()), unlisted: unlisted}
}
