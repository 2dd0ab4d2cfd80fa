// Package signer serves kube-apiserver's external JWT signer protocol (KEP-740,
// k8s.io/externaljwt/apis/v1 ExternalJWTSigner: Sign, FetchKeys, Metadata) on a local unix socket,
// so that the issuer itself signs service-account tokens (kube-apiserver
// --service-account-signing-endpoint) and what signs and what is published come from one key set.
//
// # Pieces
//
//   - KeySet is where keys come from. Its one method returns a Snapshot: the active SigningKey, the
//     public keys to publish and when that data last changed. The Server reads one snapshot per
//     call, so a Sign never mixes the header of one key with the signature of another, and a key
//     switch is atomic from kube-apiserver's point of view.
//   - Server implements the gRPC service over a KeySet. Sign builds the header exactly as
//     kube-apiserver's client validates it ({"alg","kid","typ":"JWT"}, nothing else) and signs
//     base64url(header) "." claims with the active key (RS256: RSASSA-PKCS1-v1_5 with SHA-256;
//     ES256/384/512: ECDSA with the fixed-size r||s JWS encoding). FetchKeys returns every published
//     key with kube-apiserver's kid (package keys) and the refresh hint; Metadata the maximum token
//     lifetime.
//   - Listen creates the socket safely (mode 0600, never replacing anything but a stale socket) and
//     Server.Serve runs gRPC on it until its context ends.
//   - StaticKeySet is an in-memory KeySet whose active key can be switched (Promote), for tests and
//     for proving the protocol against a real kube-apiserver before the persisted lifecycle backs it.
//
// # The lifecycle as a KeySet
//
// lifecycle.State (in a signer-mode document, where the active record keeps its private key) maps
// onto Snapshot without a change of shape, through an adapter that watches the state Secret (or the
// local cache; package signerstate) and, on every change, builds the snapshot once and swaps it in
// atomically:
//
//   - Snapshot.Active = NewSigningKey(the active record's private key) — the kid is then the one
//     package keys computes for every other document, so an imported sa.key keeps its kid;
//   - Snapshot.Published = every record (staged, active, previous) as a PublishedKey with
//     ExcludeFromOIDCDiscovery false: staged keys are published ahead of signing exactly as in
//     Secret mode, previous keys until their publish_until;
//   - Snapshot.Updated = the time the state's keys last changed (keysChanged), which kube-apiserver exports as
//     its key data timestamp and uses to tell a changed key set from an unchanged one.
//
// Building the snapshot on change rather than per call keeps Sign free of parsing and I/O: a
// snapshot read is an atomic load. A promote is a compare-and-swap on the state; every signer sees
// it on its next watch event and signs with the new key from the next Sign on, with no
// kube-apiserver restart. KMS-backed keys fit the same shape: the SigningKey wraps a crypto.Signer
// that calls kms:Sign (and should verify what it got back, as the local signers do internally).
//
// # Trust
//
// The socket is local, but whatever can connect can mint tokens for any service account, so it is
// created 0600 and the input is still treated as untrusted: claims are bounded in size and must be
// a base64url JSON object, gRPC messages, headers, streams and connections are bounded, and errors
// to the caller are gRPC status codes with short messages while the details go to the log.
package signer
