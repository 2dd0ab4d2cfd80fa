package lifecycle

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys/kubesource"
)

// signingLayout is how a tool stores the signing key in a Secret. It mirrors the layouts
// kubesource.KeysFromSecret reads (a test keeps the two in step).
type signingLayout struct {
	name    string
	public  string
	private string
	// bundle: kube-apiserver is given the public entry as a --service-account-key-file, so it can
	// hold the verification bundle (active + previous public keys).
	bundle bool
}

func signingLayouts() []signingLayout {
	return []signingLayout{
		{name: "Cluster API / EKS Anywhere", public: "tls.crt", private: "tls.key", bundle: true},
		{name: "kubeadm", public: "sa.pub", private: "sa.key", bundle: true},
		// OpenShift's operator keeps previous keys in its own ConfigMap: the entry holds one key.
		{name: "OpenShift", public: "service-account.pub", private: "service-account.key"},
	}
}

// layoutOf is the layout whose private-key entry the Secret has: the entry promote writes.
func layoutOf(s *corev1.Secret) (signingLayout, error) {
	for _, l := range signingLayouts() {
		if _, ok := s.Data[l.private]; ok {
			return l, nil
		}
	}
	return signingLayout{}, fmt.Errorf("%w: signing-key Secret %s/%s has no private-key entry (tls.key, sa.key or service-account.key): nothing can be promoted into it",
		ErrConflict, s.Namespace, s.Name)
}

// activeKeys are the keys whose private half is in the Secret: the ones kube-apiserver signs with.
func activeKeys(s *corev1.Secret) ([]keys.PublicKey, error) {
	ks, err := kubesource.KeysFromSecret(s)
	if err != nil {
		return nil, err
	}
	var out []keys.PublicKey
	for _, k := range ks {
		if k.Phase == keys.PhaseActive {
			out = append(out, k.Public)
		}
	}
	return out, nil
}

// promoteInto makes r the signing key of s in the layout s already uses: the private entry gets
// r's private key; the public entry gets r's public key first, followed — where the layout keeps a
// bundle — by every key it listed before and the outgoing signing key, so kube-apiserver keeps
// accepting tokens signed by them. It reports false when r already signs (a repeated promote).
func promoteInto(s *corev1.Secret, r Record) (bool, error) {
	if len(r.private) == 0 {
		return false, fmt.Errorf("key %s has no private key to promote", r.KID)
	}
	l, err := layoutOf(s)
	if err != nil {
		return false, err
	}
	outgoing, err := activeKeys(s)
	if err != nil {
		return false, fmt.Errorf("reading the current signing key: %w", err)
	}
	if len(outgoing) == 1 && outgoing[0].Equal(r.Public) {
		return false, nil
	}
	bundle := []keys.PublicKey{r.Public}
	if l.bundle {
		listed, err := parseEntry(s, l.public)
		if err != nil {
			return false, err
		}
		bundle = appendUnique(bundle, outgoing...)
		bundle = appendUnique(bundle, listed...)
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[l.private] = slices.Clone([]byte(r.private))
	s.Data[l.public] = encodeBundle(bundle)
	return true, nil
}

// removeFromBundle drops the keys kids from the Secret's public entry, never the signing key. It
// reports whether the Secret changed.
func removeFromBundle(s *corev1.Secret, kids []string) (bool, error) {
	l, err := layoutOf(s)
	if err != nil {
		return false, err
	}
	if _, ok := s.Data[l.public]; !ok {
		return false, nil
	}
	listed, err := parseEntry(s, l.public)
	if err != nil {
		return false, err
	}
	signing, err := activeKeys(s)
	if err != nil {
		return false, fmt.Errorf("reading the current signing key: %w", err)
	}
	kept := slices.DeleteFunc(slices.Clone(listed), func(k keys.PublicKey) bool {
		return slices.Contains(kids, k.KeyID()) && !slices.ContainsFunc(signing, k.Equal)
	})
	if len(kept) == len(listed) {
		return false, nil
	}
	if len(kept) == 0 {
		kept = signing
	}
	s.Data[l.public] = encodeBundle(kept)
	return true, nil
}

// bundleKIDs lists the kids in the Secret's public entry (for status and tests).
func bundleKIDs(s *corev1.Secret) ([]string, error) {
	l, err := layoutOf(s)
	if err != nil {
		return nil, err
	}
	if _, ok := s.Data[l.public]; !ok {
		return nil, nil
	}
	listed, err := parseEntry(s, l.public)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(listed))
	for i, k := range listed {
		out[i] = k.KeyID()
	}
	sort.Strings(out)
	return out, nil
}

func parseEntry(s *corev1.Secret, entry string) ([]keys.PublicKey, error) {
	data, ok := s.Data[entry]
	if !ok || len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	ks, err := keys.ParsePEM("secret "+s.Namespace+"/"+s.Name+" entry "+entry, data)
	if err != nil {
		return nil, fmt.Errorf("reading the verification bundle: %w", err)
	}
	return ks, nil
}

func appendUnique(dst []keys.PublicKey, ks ...keys.PublicKey) []keys.PublicKey {
	for _, k := range ks {
		if !slices.ContainsFunc(dst, k.Equal) {
			dst = append(dst, k)
		}
	}
	return dst
}

func encodeBundle(ks []keys.PublicKey) []byte {
	var b bytes.Buffer
	for _, k := range ks {
		b.Write(k.PEM())
	}
	return b.Bytes()
}

// errNoSigningKey: the signing-key Secret holds no private key, so it says nothing about which key
// signs; departures are not inferred from it.
var errNoSigningKey = errors.New("the signing-key Secret holds no private key")
