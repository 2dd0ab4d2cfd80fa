package server

import (
	"strconv"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
)

// docKind indexes the two served documents.
type docKind int

const (
	kindDiscovery docKind = iota
	kindJWKS
	numKinds
)

// published is one documents.Set together with everything needed to answer for it, built once at
// Publish so that a request only assigns ready-made header values and writes ready-made bytes.
type published struct {
	set  *documents.Set
	docs [numKinds]servedDocument
}

// servedDocument holds one document's body and its header values. Each header value is a slice of
// length and capacity one, shared by every response: a handler or middleware that calls
// Header().Add on it gets a fresh backing array from append instead of writing into the shared one.
type servedDocument struct {
	body []byte
	// etag is the document's strong entity tag, quoted, for If-None-Match comparison.
	etag          string
	contentType   []string
	cacheControl  []string
	etagValue     []string
	contentLength []string
}

func newPublished(d *documents.Set) *published {
	return &published{
		set: d,
		docs: [numKinds]servedDocument{
			kindDiscovery: newServedDocument(&d.Discovery),
			kindJWKS:      newServedDocument(&d.JWKS),
		},
	}
}

func newServedDocument(d *documents.Document) servedDocument {
	return servedDocument{
		body:          d.Body,
		etag:          d.ETag,
		contentType:   []string{d.ContentType},
		cacheControl:  []string{d.CacheControl},
		etagValue:     []string{d.ETag},
		contentLength: []string{strconv.Itoa(len(d.Body))},
	}
}
