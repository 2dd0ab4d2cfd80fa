package server

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

// PublicHandler serves <issuer path>/.well-known/openid-configuration and
// <issuer path>/openid/v1/jwks:
//
//   - GET, HEAD: 200 with the published bytes, or 304 when If-None-Match matches the ETag;
//     503 with Retry-After before the first Publish (never an empty JWKS).
//   - OPTIONS: 204 answering a CORS preflight. The documents are public (Access-Control-Allow-Origin
//     is "*" on every answer), and browser clients whose fetch carries a non-safelisted header (a
//     tracing header such as traceparent, or an explicit If-None-Match) are preflighted; refusing
//     the preflight would break them for no protection.
//   - any other method: 405 with Allow.
//
// Every other path answers 404. A server with several issuers (a fleet) answers the same for each
// issuer's paths; which issuer a request reaches depends on its path alone, never on its Host.
//
// The route table is an immutable map from document path to issuer, swapped atomically when an
// issuer is added or removed; GET and HEAD of a document, which are virtually all the traffic, are
// one map lookup and go straight to the document handler. Everything else goes through a chi
// router whose single catch-all route answers OPTIONS, 405 and 404 from the same table: chi's
// Mux.ServeHTTP allocates a request copy and a context value for every request (its own source
// says so), and the document path must not allocate. The tests run every case through both and
// require the same answers.
func (s *Server) PublicHandler() http.Handler {
	return &publicHandler{s: s, router: s.publicRouter()}
}

type publicHandler struct {
	s      *Server
	router http.Handler
}

func (h *publicHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		if e, ok := h.s.route(r); ok {
			e.issuer.serveDocument(w, r, e.kind)
			return
		}
	}
	h.router.ServeHTTP(w, r)
}

// route looks the request's path up in the current route table.
func (s *Server) route(r *http.Request) (routeEntry, bool) {
	e, ok := (*s.routes.Load())[requestRoutePath(r)]
	return e, ok
}

// requestRoutePath is the path chi routes by, so that the shortcut and the router agree on
// escaped paths.
func requestRoutePath(r *http.Request) string {
	if r.URL.RawPath != "" {
		return r.URL.RawPath
	}
	return r.URL.Path
}

func (s *Server) publicRouter() chi.Router {
	r := chi.NewRouter()
	r.NotFound(s.notFound)
	r.MethodNotAllowed(s.methodNotAllowed)
	r.HandleFunc("/*", func(w http.ResponseWriter, r *http.Request) {
		e, ok := s.route(r)
		switch {
		case !ok:
			s.notFound(w, r)
		case r.Method == http.MethodGet || r.Method == http.MethodHead:
			e.issuer.serveDocument(w, r, e.kind)
		case r.Method == http.MethodOptions:
			s.writeFixed(w, r, &s.responses.preflight, routeOf(e.kind))
		default:
			s.writeFixed(w, r, &s.responses.methodNotAllowed, routeOf(e.kind))
		}
	})
	return r
}

// serveDocument answers GET and HEAD of one document from the published snapshot.
func (i *Issuer) serveDocument(w http.ResponseWriter, r *http.Request, kind docKind) {
	s := i.srv
	p := i.current.Load()
	if p == nil {
		s.writeFixed(w, r, &s.responses.unpublished, routeOf(kind))
		return
	}
	d := &p.docs[kind]
	h := w.Header()
	// Canonical keys assigned directly: Header.Set would allocate a new one-element slice per call.
	h["Etag"] = d.etagValue
	h["Cache-Control"] = d.cacheControl
	h["Access-Control-Allow-Origin"] = s.responses.anyOrigin
	h["X-Content-Type-Options"] = s.responses.nosniff
	if ifNoneMatch(r.Header["If-None-Match"], d.etag) {
		w.WriteHeader(http.StatusNotModified)
		s.metrics.request(routeOf(kind), status304)
		return
	}
	h["Content-Type"] = d.contentType
	h["Content-Length"] = d.contentLength
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		// A failed write means the client went away; there is nobody left to tell.
		_, _ = w.Write(d.body)
	}
	s.metrics.request(routeOf(kind), status200)
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.writeFixed(w, r, &s.responses.notFound, routeOther)
}

// methodNotAllowed is what chi calls for a method it does not know at all, on any path: a
// document path answers 405, anywhere else 404.
func (s *Server) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	if e, ok := s.route(r); ok {
		s.writeFixed(w, r, &s.responses.methodNotAllowed, routeOf(e.kind))
		return
	}
	s.notFound(w, r)
}

func (s *Server) writeFixed(w http.ResponseWriter, r *http.Request, resp *fixedResponse, rt route) {
	h := w.Header()
	for _, f := range resp.header {
		h[f.key] = f.value
	}
	w.WriteHeader(statusCode(resp.status))
	if r.Method != http.MethodHead && len(resp.body) > 0 {
		_, _ = w.Write(resp.body)
	}
	s.metrics.request(rt, resp.status)
}
