// Package storage mirrors the issuer's rendered documents to places relying parties can read
// without reaching the issuer itself: an S3 bucket (package s3sink) or a web root served by nginx
// or any other web server (package filesink).
//
// A Sink stores single objects; Publish puts one rendered documents.Set into a Sink in the order
// that keeps readers safe (JWKS first, discovery second) and skips objects that already hold the
// same content; Unpublish removes them for good in the reverse order (discovery first, JWKS
// second). Running Publish on every key-set change, retrying and reconciling is package mirror's
// job. Every Sink passes the conformance suite in storagetest.
package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
)

// ErrNotFound is returned (wrapped) by Sink.Stat for a key that holds no object.
var ErrNotFound = errors.New("object not found")

// Object is one document as a sink stores it.
type Object struct {
	// Key is relative to the sink's root, without a leading slash, e.g. "openid/v1/jwks". Each
	// sink maps it to its own namespace (a bucket prefix, a directory).
	Key          string
	Body         []byte
	ContentType  string
	CacheControl string
	// SHA256 is the hex SHA-256 of Body, stored with the object where the sink can (S3 user
	// metadata) so that an unchanged object is recognised without reading it back.
	SHA256 string
}

// ObjectInfo is what a sink knows about a stored object without transferring its body.
type ObjectInfo struct {
	// SHA256 is the hex SHA-256 of the stored body; empty when nothing recorded it (an object
	// uploaded by hand), which makes it differ from every document.
	SHA256 string
	// Headers says whether the sink stores ContentType and CacheControl with the object (S3). A
	// web root does not: the server in front of it sets them from its own configuration.
	Headers      bool
	ContentType  string
	CacheControl string
}

// Matches reports whether the stored object is o: same body and, where the sink stores them, the
// same headers (a changed --max-age rewrites the objects even though their bodies are unchanged).
func (i ObjectInfo) Matches(o Object) bool {
	if i.SHA256 == "" || i.SHA256 != o.SHA256 {
		return false
	}
	return !i.Headers || (i.ContentType == o.ContentType && i.CacheControl == o.CacheControl)
}

// Sink is a place the documents are mirrored to. Implementations must be safe for concurrent
// use, and Put must be atomic for readers: a reader sees the old object or the new one, never a
// mix or a partial body.
type Sink interface {
	// String names the sink in logs, metrics and status, e.g. "s3://bucket/prefix" or
	// "file:///srv/www/oidc". It never contains credentials.
	String() string
	// Location says where key is stored, for people: "s3://bucket/prefix/openid/v1/jwks",
	// "/srv/www/oidc/openid/v1/jwks".
	Location(key string) string
	// Stat describes the object at key, or returns an error wrapping ErrNotFound.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// Put stores o, replacing whatever is at o.Key.
	Put(ctx context.Context, o Object) error
	// Delete removes the object at key. It is idempotent: removing a key that holds no object is
	// not an error, so a retried or repeated removal succeeds. It must not remove anything but
	// that key: no other object, not one whose key merely starts with key, nothing outside the
	// sink's namespace (a sink may tidy up what only held that object, such as an emptied
	// directory below a web root).
	Delete(ctx context.Context, key string) error
}

// AccessReport says whether anonymous readers (relying parties) can fetch the mirrored objects.
type AccessReport struct {
	// Public means a policy grants anonymous read of every mirrored object and nothing known
	// (a Public Access Block) cancels it.
	Public bool `json:"public"`
	// Managed means the sink wrote that policy itself (--s3-manage-bucket-policy).
	Managed bool `json:"managed"`
	// Problems explain, with the fix, what keeps the objects from being public, or why it could
	// not be checked.
	Problems []string `json:"problems,omitempty"`
}

// AccessManager is implemented by sinks that control who may read their objects (S3 bucket
// policies). A web root has no such control: its web server decides.
type AccessManager interface {
	// EnsurePublicRead makes keys publicly readable when the sink is configured to manage access,
	// and otherwise only checks and explains. It returns an error when managing failed; a check
	// that cannot be made is reported in AccessReport.Problems instead.
	EnsurePublicRead(ctx context.Context, keys []string) (AccessReport, error)
}

// Objects returns set's documents in publication order: JWKS first, discovery second. A reader
// that finds the new discovery document then always finds a JWKS at least as new; the discovery
// document only names the JWKS URL (which never changes) and the algorithms, so an older one next
// to a newer JWKS is harmless.
func Objects(set *documents.Set) []Object {
	return []Object{object(set.JWKS), object(set.Discovery)}
}

// Keys returns the keys Objects uses, in the same order.
func Keys() []string {
	return []string{Key(documents.JWKSPath), Key(documents.DiscoveryPath)}
}

// Key turns a document path ("/openid/v1/jwks") into an object key ("openid/v1/jwks").
func Key(documentPath string) string { return strings.TrimPrefix(documentPath, "/") }

func object(d documents.Document) Object {
	return Object{
		Key:          Key(d.Path),
		Body:         d.Body,
		ContentType:  d.ContentType,
		CacheControl: d.CacheControl,
		SHA256:       d.SHA256,
	}
}

// Result is what one Publish did.
type Result struct {
	// Written are the keys stored, in order.
	Written []string
	// Unchanged are the keys skipped because they already held the document.
	Unchanged []string
	// StatErrors are failures to describe an existing object (for example a role allowed to
	// PutObject but not to read): the object was written anyway, so unchanged objects are
	// rewritten on every publish until that is fixed.
	StatErrors []error
}

// Publish stores set in sink: the JWKS, then the discovery document, each only when the stored
// object differs. It stops at the first object it cannot store, so a failure can never leave a
// new discovery document next to an older JWKS.
func Publish(ctx context.Context, sink Sink, set *documents.Set) (Result, error) {
	var res Result
	if set == nil {
		return res, errors.New("publishing to " + sink.String() + ": no documents")
	}
	for _, o := range Objects(set) {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("publishing %s: %w", sink.Location(o.Key), err)
		}
		info, err := sink.Stat(ctx, o.Key)
		switch {
		case err == nil && info.Matches(o):
			res.Unchanged = append(res.Unchanged, o.Key)
			continue
		case err != nil && !errors.Is(err, ErrNotFound):
			res.StatErrors = append(res.StatErrors, err)
		}
		if err := sink.Put(ctx, o); err != nil {
			return res, fmt.Errorf("publishing generation %d: %w", set.Generation, err)
		}
		res.Written = append(res.Written, o.Key)
	}
	return res, nil
}

// UnpublishKeys returns the keys Unpublish removes, in its order: discovery first, JWKS second,
// the reverse of Keys.
func UnpublishKeys() []string {
	k := Keys()
	slices.Reverse(k)
	return k
}

// UnpublishResult is what one Unpublish did.
type UnpublishResult struct {
	// Removed are the keys that no longer hold an object, in order. Delete is idempotent, so a
	// key that held nothing before (a repeated Unpublish) is listed too.
	Removed []string
}

// Unpublish removes the documents' objects from sink for good (the cluster they describe is
// gone): the discovery document first, then the JWKS. It stops at the first object it cannot
// remove, so a reader can never find a discovery document pointing at a JWKS that is gone; a
// failure after the discovery document was removed leaves only a JWKS that nothing points to.
// Running it again after a failure finishes the job.
func Unpublish(ctx context.Context, sink Sink) (UnpublishResult, error) {
	var res UnpublishResult
	for _, key := range UnpublishKeys() {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("unpublishing %s: %w", sink.Location(key), err)
		}
		if err := sink.Delete(ctx, key); err != nil {
			if key == Key(documents.DiscoveryPath) {
				return res, fmt.Errorf("unpublishing from %s (the JWKS is kept while the discovery document remains): %w", sink.String(), err)
			}
			return res, fmt.Errorf("unpublishing from %s: %w", sink.String(), err)
		}
		res.Removed = append(res.Removed, key)
	}
	return res, nil
}
