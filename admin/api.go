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
// caller's identity, the action, the kid (and in fleet mode the namespace and cluster) and the
// outcome; the token never is.
//
// # Fleet mode
//
// An issuer serving a fleet (Config.Clusters) serves each cluster's lifecycle under its own path,
// and not /admin/v1/keys (404):
//
//	GET    /admin/v1/clusters/{namespace}/{cluster}/keys                 list
//	POST   /admin/v1/clusters/{namespace}/{cluster}/keys                 stage
//	POST   /admin/v1/clusters/{namespace}/{cluster}/keys/{kid}/promote   promote
//	DELETE /admin/v1/clusters/{namespace}/{cluster}/keys/{kid}           withdraw or retire
//
// with the same bodies and answers; a cluster the fleet does not serve is 404 (to a caller
// authorized for its path; others get 401 or 403 as for any path). Authorization is the same
// SubjectAccessReview on the request path, so access is granted per cluster:
//
//	rules:
//	- nonResourceURLs: ["/admin/v1/clusters/team-a/alpha/keys", "/admin/v1/clusters/team-a/alpha/keys/*"]
//	  verbs: ["get", "post", "delete"]
//
// RBAC matches a nonResourceURL ending in "*" as a string prefix: "/admin/v1/clusters/team-a/*"
// grants every cluster of namespace team-a, while a prefix that ends inside a name
// ("/admin/v1/clusters/team-a/al*") also grants every cluster whose name starts so. End rules in
// "/keys" and "/keys/*".
//
// Paths are taken literally: one with percent-encoding, an empty ("//", a trailing slash), "." or
// ".." segment, or any character but letters, digits and "-._~" between its slashes is 404 once
// the caller is authenticated, before it is authorized. So the path authorized is exactly the
// path sent and the path routed, and no spelling of a path can be authorized for one cluster (say
// ".../team-a/alpha/keys/../../../team-b/alpha/keys" under "/admin/v1/clusters/team-a/alpha/keys/*")
// and act on another. This holds in single-cluster mode too.
//
// The admin API only acts on the lifecycle state (package lifecycle); it never writes documents.
// The documents follow the state through the key collector like every other key change.
package admin

import "time"

// PathPrefix is where the API serves the issuer's lifecycle (Config.Keys).
const PathPrefix = "/admin/v1/keys"

// ClusterPathPrefix is where the API serves the lifecycles of a fleet's clusters
// (Config.Clusters): ClusterPath(namespace, cluster) for each.
const ClusterPathPrefix = "/admin/v1/clusters"

// ClusterPath is the path of cluster namespace/cluster's lifecycle in fleet mode,
// ClusterPathPrefix/NAMESPACE/CLUSTER/keys; its keys are under it (/{kid}, /{kid}/promote). A
// ClusterRole grants access to that one cluster with
//
//	nonResourceURLs: [ClusterPath(namespace, cluster), ClusterPath(namespace, cluster) + "/*"]
//
// The API serves only plain names: non-empty, neither "." nor "..", and made of letters, digits,
// '-', '.', '_' and '~' (every Kubernetes name is). ClusterPath does not check or escape them.
func ClusterPath(namespace, cluster string) string {
	return ClusterPathPrefix + "/" + namespace + "/" + cluster + "/keys"
}

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

// KeyList is the answer to GET /admin/v1/keys (or a cluster's keys in fleet mode).
type KeyList struct {
	Keys          []Key  `json:"keys"`
	StateSecret   string `json:"stateSecret"`
	SigningSecret string `json:"signingSecret"`
	PublishLead   string `json:"publishLead"`
	Retention     string `json:"retention"`
	// ControlPlane is nil when no signing probe has recorded an observation.
	ControlPlane *ControlPlaneSigning `json:"controlPlane,omitempty"`
}

// StageRequest is the optional body of POST /admin/v1/keys (or a cluster's keys in fleet mode).
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
