package server

import (
	"strconv"
)

// headerField is a canonical header key with a shared, read-only value (length == capacity, see
// servedDocument).
type headerField struct {
	key   string
	value []string
}

// fixedResponse is an answer that does not depend on the published documents, built once.
type fixedResponse struct {
	status status
	header []headerField
	body   []byte
}

// responses holds the header values and fixed answers shared by every request.
type responses struct {
	anyOrigin []string
	nosniff   []string

	notFound         fixedResponse
	methodNotAllowed fixedResponse
	unpublished      fixedResponse
	preflight        fixedResponse
}

// allowedMethods is what the document paths answer; OPTIONS is listed because it is served (as a
// CORS preflight).
const allowedMethods = "GET, HEAD, OPTIONS"

// unpublishedRetryAfter is a guess at how long key sources take to deliver: the documents appear
// as soon as every source has delivered good keys once, normally within seconds of startup.
const unpublishedRetryAfter = "5"

func newResponses() responses {
	one := func(v string) []string { return []string{v} }
	anyOrigin, nosniff := one("*"), one("nosniff")
	textPlain := one("text/plain; charset=utf-8")
	text := func(st status, body string, extra ...headerField) fixedResponse {
		header := []headerField{
			{"Content-Type", textPlain},
			{"Content-Length", one(strconv.Itoa(len(body)))},
			{"X-Content-Type-Options", nosniff},
		}
		return fixedResponse{status: st, header: append(header, extra...), body: []byte(body)}
	}
	return responses{
		anyOrigin: anyOrigin,
		nosniff:   nosniff,
		notFound:  text(status404, "404 page not found\n"),
		methodNotAllowed: text(status405, "405 method not allowed: the documents answer GET, HEAD and OPTIONS\n",
			headerField{"Allow", one(allowedMethods)},
			headerField{"Access-Control-Allow-Origin", anyOrigin},
		),
		unpublished: text(status503, "503 documents not published yet: waiting for every key source to deliver its keys\n",
			headerField{"Retry-After", one(unpublishedRetryAfter)},
			// A CDN or mirror in front must not keep serving this after the keys arrive.
			headerField{"Cache-Control", one("no-store")},
			headerField{"Access-Control-Allow-Origin", anyOrigin},
		),
		preflight: fixedResponse{status: status204, header: []headerField{
			{"Allow", one(allowedMethods)},
			{"Access-Control-Allow-Origin", anyOrigin},
			{"Access-Control-Allow-Methods", one("GET, HEAD")},
			// The wildcard covers any request header of a request without credentials, which is
			// the only kind these public documents see.
			{"Access-Control-Allow-Headers", one("*")},
			{"Access-Control-Max-Age", one("86400")},
			{"X-Content-Type-Options", nosniff},
		}},
	}
}
