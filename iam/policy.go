package iam

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// PolicyVersion is the IAM policy language version every document here uses.
const PolicyVersion = "2012-10-17"

// PolicyDocument is an IAM policy: an identity policy or a role's trust policy.
type PolicyDocument struct {
	Version   string      `json:"Version"`
	Statement []Statement `json:"Statement"`
}

// Statement is one statement of a PolicyDocument.
type Statement struct {
	Sid       string            `json:"Sid,omitempty"`
	Effect    string            `json:"Effect"`
	Principal map[string]string `json:"Principal,omitempty"`
	Action    Values            `json:"Action"`
	Resource  Values            `json:"Resource,omitempty"`
	// Condition maps an operator (StringEquals, StringLike) to condition keys and their values;
	// several values of one key match any of them.
	Condition map[string]map[string]Values `json:"Condition,omitempty"`
}

// Values is a list of strings that marshals as a plain string when it holds exactly one, the way
// IAM documents are usually written.
type Values []string

// MarshalJSON writes one value as a string, anything else as an array.
func (v Values) MarshalJSON() ([]byte, error) {
	if len(v) == 1 {
		return json.Marshal(v[0])
	}
	return json.Marshal([]string(v))
}

// UnmarshalJSON accepts a string or an array of strings.
func (v *Values) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*v = Values{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("policy value: want a string or a list of strings: %w", err)
	}
	*v = many
	return nil
}

// Render marshals the document indented by two spaces, with a final newline.
func (d PolicyDocument) Render() ([]byte, error) {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("rendering IAM policy: %w", err)
	}
	return append(b, '\n'), nil
}

// ListActions are the registration's actions IAM only grants on Resource "*".
func ListActions() []string { return []string{"iam:ListOpenIDConnectProviders"} }

// ProviderActions are the registration's actions that can be limited to the provider's ARN.
// TagOpenIDConnectProvider is also what CreateOpenIDConnectProvider with tags requires.
func ProviderActions() []string {
	return []string{
		"iam:CreateOpenIDConnectProvider",
		"iam:GetOpenIDConnectProvider",
		"iam:UpdateOpenIDConnectProviderThumbprint",
		"iam:AddClientIDToOpenIDConnectProvider",
		"iam:RemoveClientIDFromOpenIDConnectProvider",
		"iam:TagOpenIDConnectProvider",
	}
}

// RequiredActions lists every IAM action registration may call, "iam:" prefixed.
func RequiredActions() []string { return append(ListActions(), ProviderActions()...) }

// RegistrationPolicy is the minimal identity policy for the principal that runs `register` or
// `serve --iam-register`: list providers (which IAM only allows on "*"), and create, read and
// update the one provider for issuerURL. accountID may be "*" (any account the principal is in);
// an empty issuerURL allows every provider ("oidc-provider/*").
func RegistrationPolicy(partition, accountID, issuerURL string) PolicyDocument {
	resource := fmt.Sprintf("arn:%s:iam::%s:oidc-provider/*", partition, accountID)
	if issuerURL != "" {
		resource = ProviderARN(partition, accountID, issuerURL)
	}
	return PolicyDocument{
		Version: PolicyVersion,
		Statement: []Statement{
			{Sid: "FindOIDCProvider", Effect: "Allow", Action: ListActions(), Resource: Values{"*"}},
			{Sid: "ManageOIDCProvider", Effect: "Allow", Action: ProviderActions(), Resource: Values{resource}},
		},
	}
}

// FleetRegistrationPolicy is RegistrationPolicy for a fleet (`serve --fleet --iam-register`): the
// provider statement covers every provider whose URL starts with urlPrefix, the issuer URL template
// up to its first placeholder ("https://oidc.example.com/clusters/"). deleteRemoved adds
// iam:DeleteOpenIDConnectProvider (--fleet-iam-delete-removed).
func FleetRegistrationPolicy(partition, accountID, urlPrefix string, deleteRemoved bool) PolicyDocument {
	actions := ProviderActions()
	if deleteRemoved {
		actions = append(actions, "iam:DeleteOpenIDConnectProvider")
	}
	resource := fmt.Sprintf("arn:%s:iam::%s:oidc-provider/%s*", partition, accountID, HostPath(urlPrefix))
	return PolicyDocument{
		Version: PolicyVersion,
		Statement: []Statement{
			{Sid: "FindOIDCProvider", Effect: "Allow", Action: ListActions(), Resource: Values{"*"}},
			{Sid: "ManageFleetOIDCProviders", Effect: "Allow", Action: actions, Resource: Values{resource}},
		},
	}
}

// NormalizeThumbprint accepts a certificate's SHA-1 fingerprint as 40 hex digits, in either case
// and with or without colons (openssl's "AB:CD:..." form), and returns the 40 lower-case hex
// digits IAM stores.
func NormalizeThumbprint(s string) (string, error) {
	t := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if len(t) != 40 {
		return "", fmt.Errorf("thumbprint %q: want 40 hex digits (a certificate's SHA-1 fingerprint)", s)
	}
	if _, err := hex.DecodeString(t); err != nil {
		return "", fmt.Errorf("thumbprint %q: want 40 hex digits (a certificate's SHA-1 fingerprint)", s)
	}
	return t, nil
}
