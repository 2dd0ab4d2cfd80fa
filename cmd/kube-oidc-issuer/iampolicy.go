package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/fleet"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/kmskey"
)

func newIAMPolicyCommand() *cobra.Command {
	var issuerURL, template, accountID, partition, region string
	var kmsKeys, fleetDelete bool
	cmd := &cobra.Command{
		Use:   "iam-policy [--issuer-url URL | --issuer-url-template TEMPLATE] [--account-id ID]",
		Short: "Print the minimal IAM policy that lets register and serve --iam-register manage the issuer's OIDC provider",
		Long: `Print the identity policy to attach to the principal (user, role, IRSA role of the issuer's pod)
that runs "register" or "serve --iam-register": iam:ListOpenIDConnectProviders (IAM only grants it on
"*"), and create / get / update-thumbprint / add and remove client ID / tag on the one provider for
--issuer-url. Without --issuer-url the second statement covers every OIDC provider; without
--account-id any account ("*": an identity policy only reaches its own account's providers).
With --issuer-url-template (fleet mode) it covers every provider under the template's fixed prefix,
plus iam:DeleteOpenIDConnectProvider with --fleet-iam-delete-removed.`,
		Example: `  kube-oidc-issuer iam-policy --issuer-url https://oidc.example.com/clusters/prod-1 --account-id 123456789012 > issuer-policy.json
  aws iam put-role-policy --role-name kube-oidc-issuer --policy-name register-oidc-provider --policy-document file://issuer-policy.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if issuerURL != "" {
				if err := validateProviderURLFlag(issuerURL); err != nil {
					return err
				}
			}
			if accountID != "*" {
				if err := iam.ValidateAccountID(accountID); err != nil {
					return fmt.Errorf("--account-id: %w", err)
				}
			}
			if err := iam.ValidatePartition(partition); err != nil {
				return fmt.Errorf("--partition: %w", err)
			}
			policy := iam.RegistrationPolicy(partition, accountID, issuerURL)
			switch {
			case template != "" && (issuerURL != "" || kmsKeys):
				return errors.New("--issuer-url-template prints the policy of a fleet: drop --issuer-url and --kms")
			case template != "":
				tmpl, err := fleet.ParseURLTemplate(template)
				if err != nil {
					return fmt.Errorf("--issuer-url-template: %w", err)
				}
				sample, _ := tmpl.Expand("ns", "cluster")
				if err := validateProviderURLFlag(sample); err != nil {
					return fmt.Errorf("--issuer-url-template renders issuer URLs IAM refuses: %w", err)
				}
				policy = iam.FleetRegistrationPolicy(partition, accountID, tmpl.StaticPrefix(), fleetDelete)
			case fleetDelete:
				return errors.New("--fleet-iam-delete-removed needs --issuer-url-template")
			}
			if kmsKeys {
				if issuerURL != "" {
					return errors.New("--kms prints the KMS policy of signer mode, which has no issuer URL: drop --issuer-url")
				}
				if !validRegionPattern(region) {
					return fmt.Errorf("--region %q: want a region such as eu-west-1, or *", region)
				}
				policy = kmskey.Policy(partition, region, accountID)
			}
			body, err := policy.Render()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(body)
			return err
		},
	}
	issuerFlags{&issuerURL}.add(cmd.Flags(), iamProviderURLSuffix+"; limits the policy to that provider (default: every OIDC provider)")
	cmd.Flags().StringVar(&template, "issuer-url-template", "", "fleet mode (serve --fleet --iam-register): print the policy for every cluster's provider under this template's fixed prefix")
	cmd.Flags().BoolVar(&fleetDelete, "fleet-iam-delete-removed", false, "with --issuer-url-template: also allow iam:DeleteOpenIDConnectProvider (serve --fleet-iam-delete-removed)")
	cmd.Flags().StringVar(&accountID, "account-id", "*", "AWS account ID of the provider")
	cmd.Flags().StringVar(&partition, "partition", "aws", "AWS partition: aws, aws-cn, aws-us-gov")
	cmd.Flags().BoolVar(&kmsKeys, "kms", false, "print instead the KMS policy of signer mode with KMS-held keys (serve --kms-keys creates tagged keys; the signers sign with them); give the signers only its UseSigningKeys statement")
	cmd.Flags().StringVar(&region, "region", "*", "with --kms: the AWS region of the keys")
	return cmd
}

// validRegionPattern accepts "*" or a region name (letters, digits, dashes).
func validRegionPattern(r string) bool {
	if r == "*" {
		return true
	}
	if r == "" || len(r) > 32 {
		return false
	}
	for _, c := range r {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
