// Package admin is the issuer's authenticated admin API for the key lifecycle, served on its own
// TLS listener, and a client for it (used by `kube-oidc-issuer keys`).
//
//	GET    /admin/v1/keys                     list the lifecycle (200)
//	POST   /admin/v1/keys                     stage a key: {"algorithm": "RS256"|"ES256"} (201; 409 if one is staged)
//	POST   /admin/v1/keys/{kid}/promote       promote the staged key (200; 409 unless staged, or before the publish lead without ?force=true)
//	DELETE /admin/v1/keys/{kid}               withdraw a staged key, or retire a previous key early (?force=true inside its retention) (200; 409 for the active key)
//
// Requests carry a bearer token. A token equal to the --admin-token-file token (compared in
// constant time) is allowed everything. Any other token is authenticated with a Kubernetes
// TokenReview and authorized with a SubjectAccessReview on the non-resource URL (the request path)
// and the lowercase HTTP method as verb, exactly as kube-apiserver authorizes its own non-resource
// URLs, so operators grant access with a ClusterRole:
//
//	rules:
//	- nonResourceURLs: ["/admin/v1/keys", "/admin/v1/keys/*"]
//	  verbs: ["get", "post", "delete"]
//
// No or an unknown token is 401, a denied one 403. Every request is audited in the log with the
// caller's identity, the action, the kid and the outcome; the token never is.
//
// The admin API only acts on the lifecycle state (package lifecycle); it never writes documents.
// The documents follow the state through the key collector like every other key change.
package admin

import "time"

// PathPrefix is where the API is served.
const PathPrefix = "/admin/v1/keys"

// Key is one key in the lifecycle as the API shows it. It never carries a private key.
type Key struct {
	KID       string `json:"kid"`
	Phase     string `json:"phase"`
	Algorithm string `json:"algorithm"`
	// PublicKey is the PEM "PUBLIC KEY" block.
	PublicKey    string     `json:"publicKey"`
	Created      time.Time  `json:"created"`
	Promoted     *time.Time `json:"promoted,omitempty"`
	Retired      *time.Time `json:"retired,omitempty"`
	PublishUntil *time.Time `json:"publishUntil,omitempty"`
	// PromotableAt is when a staged key has been published for the publish lead.
	PromotableAt *time.Time `json:"promotableAt,omitempty"`
	// InBundle says whether the signing-key Secret's public-key entry lists the key (what
	// kube-apiserver verifies with after a restart from the Secret).
	InBundle bool `json:"inBundle"`
	// Signing says whether the latest signing probe observation saw the control plane sign with
	// the key; LastSigned is when a probe last saw it.
	Signing    bool       `json:"signing"`
	LastSigned *time.Time `json:"lastSigned,omitempty"`
}

// ControlPlaneSigning is what the signing probe last saw the control plane sign with.
type ControlPlaneSigning struct {
	ObservedAt time.Time `json:"observedAt"`
	// KIDs may include keys the lifecycle does not hold (published from other sources, or not
	// at all).
	KIDs []string `json:"kids"`
}

// KeyList is the answer to GET /admin/v1/keys.
type KeyList struct {
	Keys          []Key  `json:"keys"`
	StateSecret   string `json:"stateSecret"`
	SigningSecret string `json:"signingSecret"`
	PublishLead   string `json:"publishLead"`
	Retention     string `json:"retention"`
	// ControlPlane is nil when no signing probe has recorded an observation.
	ControlPlane *ControlPlaneSigning `json:"controlPlane,omitempty"`
}

// StageRequest is the optional body of POST /admin/v1/keys.
type StageRequest struct {
	// Algorithm is RS256 (default) or ES256.
	Algorithm string `json:"algorithm,omitempty"`
}

// KeyResult is the answer to stage, promote and delete.
type KeyResult struct {
	Key Key `json:"key"`
	// Result is "staged", "promoted", "withdrawn" or "retired".
	Result string `json:"result"`
	// Note says what the operator does next, if anything.
	Note string `json:"note,omitempty"`
	// ControlPlane is what the control plane was last seen signing with (nil: not observed).
	ControlPlane *ControlPlaneSigning `json:"controlPlane,omitempty"`
}

// ErrorBody is every error response: {"error": {"status": 409, "reason": "Conflict", "message": "..."}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail describes what went wrong and, where it can, what to do.
type ErrorDetail struct {
	Status  int    `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}
