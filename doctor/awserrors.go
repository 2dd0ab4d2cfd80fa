package doctor

// The errors AWS STS returns from AssumeRoleWithWebIdentity, as AWS phrases them as far as we know
// (AWS does not document every message; the exact text may differ). docs/troubleshooting.md is
// keyed by these.
const (
	// ErrRetrieveKey: STS could not fetch the discovery document or the JWKS (unreachable, not
	// HTTPS, TLS failure, too slow, not JSON), or the JWKS has no key for the token's kid.
	ErrRetrieveKey = "InvalidIdentityToken: Couldn't retrieve verification key from your identity provider, please reference AssumeRoleWithWebIdentity documentation for requirements"
	// ErrNoProvider: no IAM OIDC provider for the token's iss in the account.
	ErrNoProvider = "InvalidIdentityToken: No OpenIDConnect provider found in your account for "
	// ErrIssuerMismatch: the discovery document's issuer differs from the URL it was fetched from.
	ErrIssuerMismatch = "InvalidIdentityToken: Issuer mismatch: the issuer in the discovery document does not match the token's iss"
	// ErrAudience: the token's aud is not a client ID of the provider.
	ErrAudience = "InvalidIdentityToken: Incorrect token audience"
	// ErrExpired: the token's exp has passed.
	ErrExpired = "ExpiredTokenException: Token expired: current date/time must be before the expiration date/time"
	// ErrNotYetValid: the token's iat or nbf lies in the future (the issuing control plane's clock
	// is ahead). STS's wording for this case is not documented; it is an InvalidIdentityToken.
	ErrNotYetValid = "InvalidIdentityToken: the token is not valid yet (iat/nbf in the future)"
	// ErrThumbprint: the provider's thumbprints do not include the chain the issuer presents.
	ErrThumbprint = "InvalidIdentityToken: OpenIDConnect provider's HTTPS certificate doesn't match configured thumbprint"
	// ErrSignature: the token's signature does not verify with the key its kid names.
	ErrSignature = "InvalidIdentityToken: Couldn't verify the token's signature with the key in the JWKS"
	// ErrMalformed: the token is not a JWS STS can parse.
	ErrMalformed = "InvalidIdentityToken: the token is not a valid JWT"
)
