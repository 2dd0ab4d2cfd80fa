package doctor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// SigningProbe finds out which keys the control plane signs service-account tokens with now, by
// minting tokens and reading the kid in their headers (package signingprobe does it through the
// TokenRequest API). Only kids cross this interface: no token ever reaches the doctor, so none
// can end up in a report.
type SigningProbe interface {
	// SigningKIDs returns the kids the probe's tokens were signed with: several while the
	// kube-apiservers behind one endpoint sign with different keys. A failure the doctor can
	// explain is a *KubeError.
	SigningKIDs(ctx context.Context) ([]string, error)
	// ServiceAccount is NAMESPACE/NAME of the ServiceAccount the probe mints tokens for.
	ServiceAccount() string
}

// SigningSecret reads the signing-key Secret. It says which key kube-apiserver signs with once it
// is (re)started from the Secret's contents; the probe says which key it signs with now.
type SigningSecret interface {
	// ActiveKIDs returns the kids of the keys whose private half the Secret holds (none when it
	// holds public keys only). A failure the doctor can explain is a *KubeError.
	ActiveKIDs(ctx context.Context) ([]string, error)
	// Name is NAMESPACE/NAME of the Secret.
	Name() string
}

// KubeErrorReason is why a request to kube-apiserver failed, as far as the report's fix depends
// on it.
type KubeErrorReason string

// The reasons a SigningProbe or a SigningSecret classifies its failures by.
const (
	// KubeForbidden: RBAC denies the request to the kubeconfig's identity.
	KubeForbidden KubeErrorReason = "forbidden"
	// KubeNotFound: the ServiceAccount or the Secret does not exist.
	KubeNotFound KubeErrorReason = "not found"
	// KubeUnauthorized: kube-apiserver does not accept the kubeconfig's credentials.
	KubeUnauthorized KubeErrorReason = "unauthorized"
	// KubeUnreachable: kube-apiserver did not answer.
	KubeUnreachable KubeErrorReason = "unreachable"
)

// KubeError is a failed request to kube-apiserver with the reason the fix depends on. The doctor
// package classifies nothing itself, so that it needs no Kubernetes client.
type KubeError struct {
	Reason KubeErrorReason
	Err    error
}

func (e *KubeError) Error() string { return e.Err.Error() }

func (e *KubeError) Unwrap() error { return e.Err }

// kubeReason is err's reason, "" when err is not a *KubeError.
func kubeReason(err error) KubeErrorReason {
	var ke *KubeError
	if errors.As(err, &ke) {
		return ke.Reason
	}
	return ""
}

// Fixes for failures any request to kube-apiserver can have.
const (
	fixKubeUnauthorized = "use a kubeconfig whose credentials kube-apiserver accepts (an expired token or client certificate, or a failing exec plugin, are the usual causes)"
	fixKubeUnreachable  = "check the --kubeconfig server URL and CA, and the network path to kube-apiserver"
)

// checkControlPlaneSigning compares the keys the control plane signs with (the probe) with the
// live JWKS (relying parties reject tokens whose key is not in it) and with the signing-key
// Secret's active key (what kube-apiserver signs with after its next restart). The two drift
// apart when the Secret is rewritten, or a key promoted, without restarting kube-apiserver.
func checkControlPlaneSigning(ctx context.Context, s *state) Result {
	probe := s.cfg.SigningProbe
	if probe == nil {
		return skip("no --kubeconfig given")
	}
	kids, err := probe.SigningKIDs(ctx)
	if err != nil {
		return probeFailed(probe.ServiceAccount(), err)
	}
	signing := sortedUnique(kids)
	if len(signing) == 0 {
		// Not expected from a probe that succeeded; never read it as "nothing to complain about".
		return fail("", "check that kube-apiserver signs service-account tokens with a key it names (a kid in the token header)",
			"the probe succeeded without seeing a kid")
	}
	signs := "the control plane signs with " + kidList(signing)
	if len(signing) > 1 {
		signs += " (several kube-apiservers sign with different keys: a control-plane roll is in progress)"
	}

	var unpublished []string
	if s.keySet != nil {
		for _, kid := range signing {
			if len(s.keySet.Key(kid)) == 0 {
				unpublished = append(unpublished, kid)
			}
		}
	}

	// The Secret is read even when a key is unpublished, because it tells the fix.
	var (
		secret                  = s.cfg.SigningSecret
		active                  []string
		secretErr               error
		differs, secretNoSigner bool
	)
	if secret != nil {
		kids, err := secret.ActiveKIDs(ctx)
		if err != nil {
			secretErr = err
		} else {
			active = sortedUnique(kids)
			differs = !slices.Equal(active, signing)
			secretNoSigner = len(active) == 0
		}
	}
	name := ""
	if secret != nil {
		name = secret.Name()
	}

	if len(unpublished) > 0 {
		detail := fmt.Sprintf("%s; not in the JWKS: %s (published: %s)", signs, strings.Join(unpublished, ", "), strings.Join(kidsOf(s.keySet), ", "))
		fix := "publish the key the control plane signs with: give serve the Secret or file kube-apiserver's --service-account-signing-key-file comes from (--secret, --key-file); after a rotation a key must be published before it signs (see docs/operations.md)"
		switch {
		case secretErr != nil:
			detail += fmt.Sprintf("; cannot read the Secret %s: %v", name, secretErr)
		case secretNoSigner:
			detail += fmt.Sprintf("; the Secret %s holds no private key", name)
		case differs:
			detail += fmt.Sprintf("; the signing key in the Secret %s is %s", name, kidList(active))
			fix = "put the signing key back into the Secret (serve publishes it again at once), or publish it through another key source (serve --key-file with its public half) and roll the control plane: restart kube-apiserver from the Secret's contents (after a promote)"
		case secret != nil:
			detail += fmt.Sprintf("; it is the signing key in the Secret %s", name)
			fix = fmt.Sprintf("publish the Secret's keys: give serve --secret %s (its /readyz on the internal listener says why a key source publishes nothing)", name)
		}
		return fail(ErrRetrieveKey, fix, "%s", detail)
	}

	if secretErr != nil {
		return secretFailed(name, secretErr)
	}
	if secretNoSigner {
		return fail("", "point --signing-secret at the Secret kube-apiserver's --service-account-signing-key-file comes from (the one holding the private key)",
			"%s, but the Secret %s holds no private key, so it is not what kube-apiserver signs from", signs, name)
	}
	if differs {
		// Not an STS error yet: the key that signs is still published (or the JWKS could not be
		// read, which earlier checks report). It becomes one when that key stops being published,
		// e.g. once its retention after leaving the Secret ends.
		fix := "roll the control plane: restart kube-apiserver from the Secret's contents (after a promote), or put the signing key back into the Secret"
		if len(signing) > 1 {
			fix = "finish rolling the control plane: restart every kube-apiserver from the Secret's contents (after a promote), or put the signing key back into the Secret"
		}
		detail := fmt.Sprintf("%s, but the signing key in the Secret %s is %s", signs, name, kidList(active))
		switch {
		case s.keySet == nil:
		case len(signing) == 1:
			detail += " (still published: its tokens verify until it leaves the JWKS)"
		default:
			detail += " (all still published: their tokens verify until they leave the JWKS)"
		}
		return fail("", fix, "%s", detail)
	}

	if secret != nil {
		signs += ": the signing key in the Secret " + name
	}
	if s.keySet == nil {
		return skip("no usable JWKS to compare with (%s)", signs)
	}
	if secret != nil {
		return pass("%s, and published", signs)
	}
	return pass("%s: published", signs)
}

func probeFailed(serviceAccount string, err error) Result {
	reason := kubeReason(err)
	detail := "cannot mint a probe token: %v"
	if reason != "" {
		detail = "cannot mint a probe token (" + string(reason) + "): %v"
	}
	ns, name, _ := strings.Cut(serviceAccount, "/")
	var fix string
	switch reason {
	case KubeForbidden:
		fix = fmt.Sprintf("grant the --kubeconfig identity create on serviceaccounts/token in namespace %s (a Role with resourceNames: [%s] is enough), or point --signing-probe-service-account at a ServiceAccount it may mint tokens for", ns, name)
	case KubeNotFound:
		fix = fmt.Sprintf("create the ServiceAccount (kubectl -n %s create serviceaccount %s), or point --signing-probe-service-account at an existing one", ns, name)
	case KubeUnauthorized:
		fix = fixKubeUnauthorized
	case KubeUnreachable:
		fix = fixKubeUnreachable
	default:
		fix = "check that kube-apiserver serves the TokenRequest API (--service-account-issuer and --service-account-signing-key-file set) and signs with a key it names (a kid in the token header)"
	}
	return fail("", fix, detail, err)
}

func secretFailed(name string, err error) Result {
	reason := kubeReason(err)
	ns, n, _ := strings.Cut(name, "/")
	var fix string
	switch reason {
	case KubeForbidden:
		fix = fmt.Sprintf("grant the --kubeconfig identity get on secrets in namespace %s (a Role with resourceNames: [%s] is enough), or leave out --signing-secret", ns, n)
	case KubeNotFound:
		fix = "point --signing-secret at the Secret kube-apiserver's --service-account-signing-key-file comes from"
	case KubeUnauthorized:
		fix = fixKubeUnauthorized
	case KubeUnreachable:
		fix = fixKubeUnreachable
	default:
		fix = "point --signing-secret at the signing-key Secret: tls.crt and tls.key (Cluster API, EKS Anywhere), sa.pub and sa.key (kubeadm), or service-account.pub and service-account.key (OpenShift)"
	}
	if reason != "" {
		return fail("", fix, "cannot read the Secret %s (%s): %v", name, reason, err)
	}
	return fail("", fix, "cannot read the Secret %s: %v", name, err)
}

// kidList is "kid A" or "kids A, B".
func kidList(kids []string) string {
	if len(kids) == 1 {
		return "kid " + kids[0]
	}
	return "kids " + strings.Join(kids, ", ")
}

func sortedUnique(kids []string) []string {
	out := slices.Clone(kids)
	slices.Sort(out)
	return slices.Compact(out)
}
