package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/spf13/cobra"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/trustpolicy"
)

// callerIdentityAPI is the part of the STS client trust-policy uses to find the account.
type callerIdentityAPI interface {
	GetCallerIdentity(context.Context, *sts.GetCallerIdentityInput, ...func(*sts.Options)) (*sts.GetCallerIdentityOutput, error)
}

// callerAccount returns the account and partition of the AWS credentials in use.
func callerAccount(ctx context.Context, api callerIdentityAPI) (accountID, partition string, err error) {
	out, err := api.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return "", "", fmt.Errorf("finding the AWS account with sts:GetCallerIdentity (or give --account-id): %w", err)
	}
	accountID = aws.ToString(out.Account)
	// arn:PARTITION:sts::ACCOUNT:assumed-role/...
	parts := strings.SplitN(aws.ToString(out.Arn), ":", 3)
	if len(parts) < 3 || parts[0] != "arn" {
		return "", "", fmt.Errorf("sts:GetCallerIdentity returned ARN %q: not an ARN", aws.ToString(out.Arn))
	}
	return accountID, parts[1], nil
}

type trustPolicyOptions struct {
	issuerURL       string
	serviceAccounts []string
	audiences       []string
	accountID       string
	partition       string
	roleName        string
}

func newTrustPolicyCommand() *cobra.Command {
	o := trustPolicyOptions{}
	cmd := &cobra.Command{
		Use:   "trust-policy --issuer-url URL --service-account NAMESPACE/NAME... [--audience AUD]... [--account-id ID]",
		Short: "Print the trust policy of an IAM role for service accounts, and the ServiceAccount annotation",
		Long: `Print (stdout) the trust policy of an IAM role that the named service accounts may assume with their
tokens: the issuer's OIDC provider as federated principal, sts:AssumeRoleWithWebIdentity, StringEquals
on HOST/PATH:aud and HOST/PATH:sub, and StringLike on :sub for names with wildcards (* and ?).

On stderr: how to create the role, and the annotation (eks.amazonaws.com/role-arn, plus
eks.amazonaws.com/audience for a non-default audience) that makes the EKS pod-identity webhook hand
the role to the service account's pods.

Without --account-id the account (and partition) of the current AWS credentials is used
(sts:GetCallerIdentity, which needs no permission).`,
		Example: `  kube-oidc-issuer trust-policy --issuer-url https://oidc.example.com/clusters/prod-1 \
      --service-account payments/api --account-id 123456789012 --role-name payments-api > trust.json
  aws iam create-role --role-name payments-api --assume-role-policy-document file://trust.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runTrustPolicy(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o, func(ctx context.Context) (callerIdentityAPI, error) {
				cfg, err := loadAWSConfig(ctx)
				if err != nil {
					return nil, err
				}
				return sts.NewFromConfig(cfg), nil
			})
		},
	}
	f := cmd.Flags()
	issuerFlags{&o.issuerURL}.add(f, iamProviderURLSuffix)
	f.StringSliceVar(&o.serviceAccounts, "service-account", nil, "NAMESPACE/NAME allowed to assume the role; * and ? are wildcards; repeatable")
	f.StringSliceVar(&o.audiences, "audience", []string{iam.DefaultAudience}, "audience the token must carry (one of); repeatable")
	f.StringVar(&o.accountID, "account-id", "", "AWS account ID of the provider (default: the account of the current AWS credentials)")
	f.StringVar(&o.partition, "partition", "", "AWS partition: aws, aws-cn, aws-us-gov (default: that of the current AWS credentials, else aws)")
	f.StringVar(&o.roleName, "role-name", "", "name of the role, for the annotation and the create-role hint (default: a placeholder)")
	return cmd
}

func runTrustPolicy(ctx context.Context, stdout, stderr io.Writer, o trustPolicyOptions, newSTS func(context.Context) (callerIdentityAPI, error)) error {
	if err := validateProviderURLFlag(o.issuerURL); err != nil {
		return err
	}
	var sas []trustpolicy.ServiceAccount
	for _, s := range o.serviceAccounts {
		sa, err := trustpolicy.ParseServiceAccount(s)
		if err != nil {
			return fmt.Errorf("--service-account: %w", err)
		}
		sas = append(sas, sa)
	}
	if len(sas) == 0 {
		return fmt.Errorf("--service-account: name at least one NAMESPACE/NAME")
	}
	if o.roleName != "" {
		if err := trustpolicy.ValidateRoleName(o.roleName); err != nil {
			return fmt.Errorf("--role-name: %w", err)
		}
	}
	if o.accountID == "" {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		api, err := newSTS(ctx)
		if err != nil {
			return err
		}
		account, partition, err := callerAccount(ctx, api)
		if err != nil {
			return err
		}
		o.accountID = account
		if o.partition == "" {
			o.partition = partition
		}
	}
	if o.partition == "" {
		o.partition = "aws"
	}
	doc, err := trustpolicy.Build(trustpolicy.Options{
		IssuerURL:       o.issuerURL,
		Partition:       o.partition,
		AccountID:       o.accountID,
		ServiceAccounts: sas,
		Audiences:       o.audiences,
	})
	if err != nil {
		return err
	}
	body, err := doc.Render()
	if err != nil {
		return err
	}
	if _, err := stdout.Write(body); err != nil {
		return err
	}
	writeAnnotationHints(stderr, o, sas)
	return nil
}

// writeAnnotationHints tells what to do with the policy: create the role, annotate the service
// accounts.
func writeAnnotationHints(w io.Writer, o trustPolicyOptions, sas []trustpolicy.ServiceAccount) {
	role := o.roleName
	if role == "" {
		role = "ROLE_NAME"
	}
	roleARN := trustpolicy.RoleARN(o.partition, o.accountID, role)
	annotations := trustpolicy.Annotations(roleARN, o.audiences)
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(annotations)) {
		kv = append(kv, k+"="+annotations[k])
	}
	fmt.Fprintf(w, "# Create the role with this trust policy (saved as trust.json):\n")
	fmt.Fprintf(w, "#   aws iam create-role --role-name %s --assume-role-policy-document file://trust.json\n", role)
	fmt.Fprintf(w, "# and annotate the service account(s), so that the pod-identity webhook gives their pods the role:\n")
	for _, sa := range sas {
		if sa.Wildcard() {
			fmt.Fprintf(w, "#   every ServiceAccount matching %s: %s\n", sa, strings.Join(kv, " "))
			continue
		}
		fmt.Fprintf(w, "#   kubectl -n %s annotate serviceaccount %s %s\n", sa.Namespace, sa.Name, strings.Join(kv, " "))
	}
	if len(o.audiences) > 1 {
		fmt.Fprintf(w, "# (the webhook requests one audience per service account: %s)\n", o.audiences[0])
	}
	for _, sa := range sas {
		if sa.Namespace == "*" && sa.Name == "*" {
			fmt.Fprintf(w, "# warning: */* lets every service account in the cluster assume the role\n")
		}
	}
}
