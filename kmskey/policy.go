package kmskey

import (
	"fmt"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam"
)

// Tags every key created by the issuer carries; the policy below relies on the first.
const (
	ManagedByTag   = "app.kubernetes.io/managed-by"
	ManagedByValue = "kube-oidc-issuer"
	StateSecretTag = "kube-oidc-issuer/state-secret"
)

// Policy is the least an identity needs for KMS-held signing keys, for keys in region and account
// ("*" for any): serve --kms-keys creates tagged keys (kms:CreateKey and kms:TagResource cannot be
// limited to a key that does not exist yet, so they are limited by the tag the request sets) and
// reads their public keys; the signers sign and read public keys, only with keys that carry the
// tag. Give serve's identity the whole policy and the signers' only the UseSigningKeys statement.
func Policy(partition, region, accountID string) iam.PolicyDocument {
	keys := fmt.Sprintf("arn:%s:kms:%s:%s:key/*", partition, region, accountID)
	return iam.PolicyDocument{
		Version: iam.PolicyVersion,
		Statement: []iam.Statement{
			{
				Sid: "CreateSigningKeys", Effect: "Allow",
				Action:   iam.Values{"kms:CreateKey", "kms:TagResource"},
				Resource: iam.Values{"*"},
				Condition: map[string]map[string]iam.Values{
					"StringEquals": {"aws:RequestTag/" + ManagedByTag: {ManagedByValue}},
				},
			},
			{
				Sid: "UseSigningKeys", Effect: "Allow",
				Action:   iam.Values{"kms:GetPublicKey", "kms:Sign"},
				Resource: iam.Values{keys},
				Condition: map[string]map[string]iam.Values{
					"StringEquals": {"aws:ResourceTag/" + ManagedByTag: {ManagedByValue}},
				},
			},
		},
	}
}
