package doctor_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/doctor"
)

// fakeProbe is the doctor's own seam: what a SigningProbe reports, without a cluster.
type fakeProbe struct {
	kids []string
	err  error
}

func (p fakeProbe) SigningKIDs(context.Context) ([]string, error) { return p.kids, p.err }
func (p fakeProbe) ServiceAccount() string                        { return "probe-ns/probe-sa" }

// fakeSecret is what a SigningSecret reports, without a cluster.
type fakeSecret struct {
	kids []string
	err  error
}

func (s fakeSecret) ActiveKIDs(context.Context) ([]string, error) { return s.kids, s.err }
func (s fakeSecret) Name() string                                 { return "kube-system/cluster-sa" }

func kubeErr(reason doctor.KubeErrorReason, msg string) error {
	return &doctor.KubeError{Reason: reason, Err: errors.New(msg)}
}

// TestControlPlaneSigning: what the control plane signs with (the probe) against the live JWKS
// and the signing-key Secret, with the exact report line for each outcome.
func TestControlPlaneSigning(t *testing.T) {
	// k1 and k2 are published; k3 is not. Short kids keep the expected lines readable.
	published := func() []jose.JSONWebKey {
		a, b := newTestKey(t).jwk(), newTestKey(t).jwk()
		a.KeyID, b.KeyID = "k1", "k2"
		return []jose.JSONWebKey{a, b}
	}()
	const (
		publishFix  = "publish the key the control plane signs with: give serve the Secret or file kube-apiserver's --service-account-signing-key-file comes from (--secret, --key-file); after a rotation a key must be published before it signs (see docs/operations.md)"
		putBackFix  = "put the signing key back into the Secret (serve publishes it again at once), or publish it through another key source (serve --key-file with its public half) and roll the control plane: restart kube-apiserver from the Secret's contents (after a promote)"
		rollFix     = "roll the control plane: restart kube-apiserver from the Secret's contents (after a promote), or put the signing key back into the Secret"
		finishFix   = "finish rolling the control plane: restart every kube-apiserver from the Secret's contents (after a promote), or put the signing key back into the Secret"
		rolling     = " (several kube-apiservers sign with different keys: a control-plane roll is in progress)"
		unreachFix  = "check the --kubeconfig server URL and CA, and the network path to kube-apiserver"
		unauthFix   = "use a kubeconfig whose credentials kube-apiserver accepts (an expired token or client certificate, or a failing exec plugin, are the usual causes)"
		secretShape = "point --signing-secret at the signing-key Secret: tls.crt and tls.key (Cluster API, EKS Anywhere), sa.pub and sa.key (kubeadm), or service-account.pub and service-account.key (OpenShift)"
	)
	tests := []struct {
		name   string
		probe  doctor.SigningProbe // nil: no --kubeconfig
		secret doctor.SigningSecret
		noJWKS bool // the JWKS is empty, so there is nothing to compare with
		want   doctor.Result
	}{
		{
			name: "no kubeconfig",
			want: doctor.Result{Status: doctor.Skip, Detail: "no --kubeconfig given"},
		},
		{
			name:  "signs with a published key",
			probe: fakeProbe{kids: []string{"k1"}},
			want:  doctor.Result{Status: doctor.Pass, Detail: "the control plane signs with kid k1: published"},
		},
		{
			name:   "signs with the Secret's key, published",
			probe:  fakeProbe{kids: []string{"k1", "k1", "k1"}},
			secret: fakeSecret{kids: []string{"k1"}},
			want:   doctor.Result{Status: doctor.Pass, Detail: "the control plane signs with kid k1: the signing key in the Secret kube-system/cluster-sa, and published"},
		},
		{
			name:  "roll in progress, both keys published",
			probe: fakeProbe{kids: []string{"k2", "k1", "k2"}},
			want:  doctor.Result{Status: doctor.Pass, Detail: "the control plane signs with kids k1, k2" + rolling + ": published"},
		},
		{
			name:  "signs with an unpublished key",
			probe: fakeProbe{kids: []string{"k3"}},
			want: doctor.Result{Status: doctor.Fail, AWSError: doctor.ErrRetrieveKey, Fix: publishFix,
				Detail: `the control plane signs with kid k3; not in the JWKS: k3 (published: "k1", "k2")`},
		},
		{
			name:  "roll in progress towards an unpublished key",
			probe: fakeProbe{kids: []string{"k1", "k3"}},
			want: doctor.Result{Status: doctor.Fail, AWSError: doctor.ErrRetrieveKey, Fix: publishFix,
				Detail: `the control plane signs with kids k1, k3` + rolling + `; not in the JWKS: k3 (published: "k1", "k2")`},
		},
		{
			name:   "Secret rewritten, kube-apiserver not restarted, old key gone from the JWKS",
			probe:  fakeProbe{kids: []string{"k3"}},
			secret: fakeSecret{kids: []string{"k1"}},
			want: doctor.Result{Status: doctor.Fail, AWSError: doctor.ErrRetrieveKey, Fix: putBackFix,
				Detail: `the control plane signs with kid k3; not in the JWKS: k3 (published: "k1", "k2"); the signing key in the Secret kube-system/cluster-sa is kid k1`},
		},
		{
			name:   "the Secret's key signs but serve does not publish it",
			probe:  fakeProbe{kids: []string{"k3"}},
			secret: fakeSecret{kids: []string{"k3"}},
			want: doctor.Result{Status: doctor.Fail, AWSError: doctor.ErrRetrieveKey,
				Fix:    "publish the Secret's keys: give serve --secret kube-system/cluster-sa (its /readyz on the internal listener says why a key source publishes nothing)",
				Detail: `the control plane signs with kid k3; not in the JWKS: k3 (published: "k1", "k2"); it is the signing key in the Secret kube-system/cluster-sa`},
		},
		{
			name:   "unpublished key, Secret unreadable",
			probe:  fakeProbe{kids: []string{"k3"}},
			secret: fakeSecret{err: kubeErr(doctor.KubeForbidden, `secrets "cluster-sa" is forbidden`)},
			want: doctor.Result{Status: doctor.Fail, AWSError: doctor.ErrRetrieveKey, Fix: publishFix,
				Detail: `the control plane signs with kid k3; not in the JWKS: k3 (published: "k1", "k2"); cannot read the Secret kube-system/cluster-sa: secrets "cluster-sa" is forbidden`},
		},
		{
			name:   "unpublished key, Secret without private key",
			probe:  fakeProbe{kids: []string{"k3"}},
			secret: fakeSecret{},
			want: doctor.Result{Status: doctor.Fail, AWSError: doctor.ErrRetrieveKey, Fix: publishFix,
				Detail: `the control plane signs with kid k3; not in the JWKS: k3 (published: "k1", "k2"); the Secret kube-system/cluster-sa holds no private key`},
		},
		{
			name:   "promoted in the Secret, kube-apiserver not restarted, old key still published",
			probe:  fakeProbe{kids: []string{"k1"}},
			secret: fakeSecret{kids: []string{"k2"}},
			want: doctor.Result{Status: doctor.Fail, Fix: rollFix,
				Detail: "the control plane signs with kid k1, but the signing key in the Secret kube-system/cluster-sa is kid k2 (still published: its tokens verify until it leaves the JWKS)"},
		},
		{
			name:   "roll in progress towards the Secret's key",
			probe:  fakeProbe{kids: []string{"k1", "k2"}},
			secret: fakeSecret{kids: []string{"k2"}},
			want: doctor.Result{Status: doctor.Fail, Fix: finishFix,
				Detail: "the control plane signs with kids k1, k2" + rolling + ", but the signing key in the Secret kube-system/cluster-sa is kid k2 (all still published: their tokens verify until they leave the JWKS)"},
		},
		{
			name:   "Secret without private key",
			probe:  fakeProbe{kids: []string{"k1"}},
			secret: fakeSecret{kids: nil},
			want: doctor.Result{Status: doctor.Fail,
				Fix:    "point --signing-secret at the Secret kube-apiserver's --service-account-signing-key-file comes from (the one holding the private key)",
				Detail: "the control plane signs with kid k1, but the Secret kube-system/cluster-sa holds no private key, so it is not what kube-apiserver signs from"},
		},
		{
			name:   "Secret forbidden",
			probe:  fakeProbe{kids: []string{"k1"}},
			secret: fakeSecret{err: kubeErr(doctor.KubeForbidden, `secrets "cluster-sa" is forbidden: User "doctor" cannot get resource "secrets"`)},
			want: doctor.Result{Status: doctor.Fail,
				Fix:    "grant the --kubeconfig identity get on secrets in namespace kube-system (a Role with resourceNames: [cluster-sa] is enough), or leave out --signing-secret",
				Detail: `cannot read the Secret kube-system/cluster-sa (forbidden): secrets "cluster-sa" is forbidden: User "doctor" cannot get resource "secrets"`},
		},
		{
			name:   "Secret not found",
			probe:  fakeProbe{kids: []string{"k1"}},
			secret: fakeSecret{err: kubeErr(doctor.KubeNotFound, `secrets "cluster-sa" not found`)},
			want: doctor.Result{Status: doctor.Fail,
				Fix:    "point --signing-secret at the Secret kube-apiserver's --service-account-signing-key-file comes from",
				Detail: `cannot read the Secret kube-system/cluster-sa (not found): secrets "cluster-sa" not found`},
		},
		{
			name:   "Secret unreachable",
			probe:  fakeProbe{kids: []string{"k1"}},
			secret: fakeSecret{err: kubeErr(doctor.KubeUnreachable, "connection refused")},
			want:   doctor.Result{Status: doctor.Fail, Fix: unreachFix, Detail: "cannot read the Secret kube-system/cluster-sa (unreachable): connection refused"},
		},
		{
			name:   "Secret in no known layout",
			probe:  fakeProbe{kids: []string{"k1"}},
			secret: fakeSecret{err: errors.New("secret kube-system/cluster-sa holds no service-account key entry")},
			want:   doctor.Result{Status: doctor.Fail, Fix: secretShape, Detail: "cannot read the Secret kube-system/cluster-sa: secret kube-system/cluster-sa holds no service-account key entry"},
		},
		{
			name:  "probe forbidden",
			probe: fakeProbe{err: kubeErr(doctor.KubeForbidden, `serviceaccounts "probe-sa" is forbidden: User "doctor" cannot create resource "serviceaccounts/token"`)},
			want: doctor.Result{Status: doctor.Fail,
				Fix:    "grant the --kubeconfig identity create on serviceaccounts/token in namespace probe-ns (a Role with resourceNames: [probe-sa] is enough), or point --signing-probe-service-account at a ServiceAccount it may mint tokens for",
				Detail: `cannot mint a probe token (forbidden): serviceaccounts "probe-sa" is forbidden: User "doctor" cannot create resource "serviceaccounts/token"`},
		},
		{
			name:   "probe ServiceAccount not found (the Secret is not read)",
			probe:  fakeProbe{err: kubeErr(doctor.KubeNotFound, `serviceaccounts "probe-sa" not found`)},
			secret: fakeSecret{kids: []string{"k2"}},
			want: doctor.Result{Status: doctor.Fail,
				Fix:    "create the ServiceAccount (kubectl -n probe-ns create serviceaccount probe-sa), or point --signing-probe-service-account at an existing one",
				Detail: `cannot mint a probe token (not found): serviceaccounts "probe-sa" not found`},
		},
		{
			name:  "probe unauthorized",
			probe: fakeProbe{err: kubeErr(doctor.KubeUnauthorized, "Unauthorized")},
			want:  doctor.Result{Status: doctor.Fail, Fix: unauthFix, Detail: "cannot mint a probe token (unauthorized): Unauthorized"},
		},
		{
			name:  "kube-apiserver unreachable",
			probe: fakeProbe{err: kubeErr(doctor.KubeUnreachable, "dial tcp 127.0.0.1:1: connect: connection refused")},
			want:  doctor.Result{Status: doctor.Fail, Fix: unreachFix, Detail: "cannot mint a probe token (unreachable): dial tcp 127.0.0.1:1: connect: connection refused"},
		},
		{
			name:  "token without kid",
			probe: fakeProbe{err: errors.New("token header has no kid (the API server signs with a key it cannot name)")},
			want: doctor.Result{Status: doctor.Fail,
				Fix:    "check that kube-apiserver serves the TokenRequest API (--service-account-issuer and --service-account-signing-key-file set) and signs with a key it names (a kid in the token header)",
				Detail: "cannot mint a probe token: token header has no kid (the API server signs with a key it cannot name)"},
		},
		{
			name:  "probe succeeds without a kid",
			probe: fakeProbe{},
			want: doctor.Result{Status: doctor.Fail,
				Fix:    "check that kube-apiserver signs service-account tokens with a key it names (a kid in the token header)",
				Detail: "the probe succeeded without seeing a kid"},
		},
		{
			name:   "no usable JWKS, Secret agrees",
			probe:  fakeProbe{kids: []string{"k3"}},
			secret: fakeSecret{kids: []string{"k3"}},
			noJWKS: true,
			want:   doctor.Result{Status: doctor.Skip, Detail: "no usable JWKS to compare with (the control plane signs with kid k3: the signing key in the Secret kube-system/cluster-sa)"},
		},
		{
			name:   "no usable JWKS, Secret differs",
			probe:  fakeProbe{kids: []string{"k3"}},
			secret: fakeSecret{kids: []string{"k1"}},
			noJWKS: true,
			want:   doctor.Result{Status: doctor.Fail, Fix: rollFix, Detail: "the control plane signs with kid k3, but the signing key in the Secret kube-system/cluster-sa is kid k1"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			is := newIssuer(t, published...)
			if tc.noJWKS {
				is.setKeys(t)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			rep := doctor.Run(ctx, doctor.Config{IssuerURL: is.url, RootCAs: is.roots, SigningProbe: tc.probe, SigningSecret: tc.secret})
			got, ok := rep.Result("control-plane-signing")
			if !ok {
				t.Fatal("no control-plane-signing result")
			}
			tc.want.Name = "control-plane-signing"
			if got != tc.want {
				t.Errorf("got\n%+v\nwant\n%+v", got, tc.want)
			}
			// The other checks are unaffected: only this one (and, without a JWKS, jwks-keys) fails.
			for _, r := range rep.Results {
				if r.Status == doctor.Fail && r.Name != "control-plane-signing" && (r.Name != "jwks-keys" || !tc.noJWKS) {
					t.Errorf("%s failed: %s", r.Name, r.Detail)
				}
			}
		})
	}
}

// TestControlPlaneSigningOrder: the check runs after the token checks (it uses the JWKS they
// use) and before the IAM checks.
func TestControlPlaneSigningOrder(t *testing.T) {
	is := newIssuer(t, newTestKey(t).jwk())
	rep := doctor.Run(context.Background(), doctor.Config{IssuerURL: is.url, RootCAs: is.roots})
	names := make([]string, len(rep.Results))
	for i, r := range rep.Results {
		names[i] = r.Name
	}
	i := slices.Index(names, "control-plane-signing")
	if i < 1 || names[i-1] != "token-signature" || names[i+1] != "iam-provider" {
		t.Fatalf("checks in order %v: want control-plane-signing between token-signature and iam-provider", names)
	}
}
