// Package trustpolicy writes the trust policy of an IAM role that Kubernetes service accounts
// assume with their tokens (sts:AssumeRoleWithWebIdentity through the issuer's OIDC provider), and
// the ServiceAccount annotations the EKS pod-identity webhook reads to use that role.
package trustpolicy

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam"
)

// Annotations the EKS pod-identity webhook (amazon-eks-pod-identity-webhook) reads on a
// ServiceAccount.
const (
	RoleARNAnnotation  = "eks.amazonaws.com/role-arn"
	AudienceAnnotation = "eks.amazonaws.com/audience"
)

// AssumeAction is the STS action a pod's token is exchanged with.
const AssumeAction = "sts:AssumeRoleWithWebIdentity"

// ServiceAccount names one service account, or several with IAM wildcards (* any run of
// characters, ? one character) in either part.
type ServiceAccount struct {
	Namespace, Name string
}

// ParseServiceAccount reads NAMESPACE/NAME, where either part may contain * or ?.
func ParseServiceAccount(s string) (ServiceAccount, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || strings.Contains(name, "/") {
		return ServiceAccount{}, fmt.Errorf("service account %q: want NAMESPACE/NAME", s)
	}
	sa := ServiceAccount{Namespace: ns, Name: name}
	if err := sa.validate(); err != nil {
		return ServiceAccount{}, fmt.Errorf("service account %q: %w", s, err)
	}
	return sa, nil
}

// validate allows what Kubernetes allows in namespace (DNS label) and service-account (DNS
// subdomain) names, plus the two IAM wildcards. That also keeps out anything IAM would read as a
// policy variable (${...}).
func (sa ServiceAccount) validate() error {
	check := func(what, v, allowed string, max int) error {
		switch {
		case v == "":
			return fmt.Errorf("empty %s", what)
		case len(v) > max:
			return fmt.Errorf("%s longer than %d characters", what, max)
		case strings.Trim(v, allowed+"*?") != "":
			return fmt.Errorf("%s %q: only lower-case letters, digits, %q and the wildcards * and ?", what, v, strings.Trim(allowed, "abcdefghijklmnopqrstuvwxyz0123456789"))
		}
		return nil
	}
	const label = "abcdefghijklmnopqrstuvwxyz0123456789-"
	return errors.Join(check("namespace", sa.Namespace, label, 63), check("name", sa.Name, label+".", 253))
}

// Wildcard reports whether the entry names several service accounts (needs StringLike).
func (sa ServiceAccount) Wildcard() bool {
	return strings.ContainsAny(sa.Namespace+sa.Name, "*?")
}

// Subject is the token's sub claim for the service account.
func (sa ServiceAccount) Subject() string {
	return "system:serviceaccount:" + sa.Namespace + ":" + sa.Name
}

func (sa ServiceAccount) String() string { return sa.Namespace + "/" + sa.Name }

// Options says whom the role trusts.
type Options struct {
	// IssuerURL is the provider's URL: the tokens' iss.
	IssuerURL string
	// Partition ("aws" when empty) and AccountID locate the provider.
	Partition string
	AccountID string
	// ServiceAccounts may assume the role; at least one.
	ServiceAccounts []ServiceAccount
	// Audiences the token must carry one of; empty means iam.DefaultAudience.
	Audiences []string
}

// Build returns the trust policy: the provider's ARN as the federated principal,
// sts:AssumeRoleWithWebIdentity, the token's aud in Audiences, and its sub one of the service
// accounts — StringEquals for exact names, and a second statement with StringLike for names with
// wildcards (one statement could not hold both: its conditions must all match).
func Build(o Options) (iam.PolicyDocument, error) {
	if o.Partition == "" {
		o.Partition = "aws"
	}
	if len(o.Audiences) == 0 {
		o.Audiences = []string{iam.DefaultAudience}
	}
	if err := errors.Join(
		iam.ValidateProviderURL(o.IssuerURL),
		iam.ValidatePartition(o.Partition),
		iam.ValidateAccountID(o.AccountID),
		iam.ValidateAudiences(o.Audiences),
	); err != nil {
		return iam.PolicyDocument{}, err
	}
	if len(o.ServiceAccounts) == 0 {
		return iam.PolicyDocument{}, errors.New("no service account: name at least one NAMESPACE/NAME")
	}
	var exact, like []string
	for _, sa := range o.ServiceAccounts {
		if err := sa.validate(); err != nil {
			return iam.PolicyDocument{}, fmt.Errorf("service account %s: %w", sa, err)
		}
		sub := sa.Subject()
		if sa.Wildcard() {
			if !slices.Contains(like, sub) {
				like = append(like, sub)
			}
		} else if !slices.Contains(exact, sub) {
			exact = append(exact, sub)
		}
	}

	prefix := iam.HostPath(o.IssuerURL)
	statement := func(sid string) iam.Statement {
		return iam.Statement{
			Sid:       sid,
			Effect:    "Allow",
			Principal: map[string]string{"Federated": iam.ProviderARN(o.Partition, o.AccountID, o.IssuerURL)},
			Action:    iam.Values{AssumeAction},
			Condition: map[string]map[string]iam.Values{
				"StringEquals": {prefix + ":aud": o.Audiences},
			},
		}
	}
	doc := iam.PolicyDocument{Version: iam.PolicyVersion}
	if len(exact) > 0 {
		s := statement("ServiceAccounts")
		s.Condition["StringEquals"][prefix+":sub"] = exact
		doc.Statement = append(doc.Statement, s)
	}
	if len(like) > 0 {
		s := statement("ServiceAccountPatterns")
		s.Condition["StringLike"] = map[string]iam.Values{prefix + ":sub": like}
		doc.Statement = append(doc.Statement, s)
	}
	return doc, nil
}

// RoleARN is the ARN of role roleName (which may carry a path: "team/app") in accountID.
func RoleARN(partition, accountID, roleName string) string {
	if partition == "" {
		partition = "aws"
	}
	return fmt.Sprintf("arn:%s:iam::%s:role/%s", partition, accountID, roleName)
}

// ValidateRoleName accepts an IAM role name, optionally with a path ("team/app"): 1 to 64
// characters of letters, digits and +=,.@_- in the name.
func ValidateRoleName(roleName string) error {
	name := roleName[strings.LastIndex(roleName, "/")+1:]
	const allowed = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+=,.@_-"
	if name == "" || len(name) > 64 || strings.Trim(name, allowed) != "" {
		return fmt.Errorf("role name %q: want 1 to 64 letters, digits or +=,.@_-", roleName)
	}
	return nil
}

// Annotations are what a ServiceAccount needs for the pod-identity webhook to give its pods the
// role: the role ARN, and the token audience when it is not the webhook's default
// (sts.amazonaws.com). The webhook requests one audience: the first of audiences.
func Annotations(roleARN string, audiences []string) map[string]string {
	a := map[string]string{RoleARNAnnotation: roleARN}
	if len(audiences) > 0 && audiences[0] != iam.DefaultAudience {
		a[AudienceAnnotation] = audiences[0]
	}
	return a
}
