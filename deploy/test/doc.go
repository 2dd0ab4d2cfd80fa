// Package deploytest proves the manifests in deploy/ and the container build: the kustomize base,
// overlays and example and the Helm chart are rendered with the kustomize and Helm Go libraries and
// really applied (server-side apply, strict field validation) to a real kube-apiserver; their RBAC
// is then exercised as the issuer's own ServiceAccount and checked with SubjectAccessReviews; and
// the binary is built exactly as the Dockerfile builds it, checked to be static and run as the
// image's non-root user.
//
// It is a module of its own so that Helm and kustomize never enter the issuer's go.mod.
package deploytest
