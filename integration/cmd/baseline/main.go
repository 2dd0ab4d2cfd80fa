// Command baseline is the yardstick of `make bench-serve`: a bare net/http handler that writes
// pre-rendered bytes with the same response headers kube-oidc-issuer sends for the JWKS, and
// nothing else: no router, no metrics, no conditional requests, no server timeouts. The issuer's
// throughput is reported as a ratio of this one's, measured in the same run on the same machine,
// so the ratio is the cost of everything the issuer does beyond copying bytes.
//
// benchserve fetches the body, ETag and Cache-Control from the running issuer and passes them in,
// so both servers put the same bytes on the wire.
package main

import (
	"crypto/tls"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	bodyFile := flag.String("body", "", "file whose bytes every response carries")
	etagValue := flag.String("etag", `"baseline"`, "ETag header value (quoted), as the issuer sends it")
	cacheControlValue := flag.String("cache-control", "public, max-age=3600", "Cache-Control header value")
	tlsCert := flag.String("tls-cert-file", "", "serve TLS with this certificate chain (PEM)")
	tlsKey := flag.String("tls-key-file", "", "private key for -tls-cert-file")
	timeouts := flag.Bool("timeouts", false, "set the issuer's server timeouts and header limit (server/serve.go), to measure what they cost")
	flag.Parse()
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		log.Fatal(err)
	}
	// Header values are built once and assigned by canonical key, as the issuer does: the
	// comparison is about the work around the handler, not about header construction.
	length := []string{strconv.Itoa(len(body))}
	contentType := []string{"application/jwk-set+json"}
	cacheControl := []string{*cacheControlValue}
	etag := []string{*etagValue}
	star, nosniff := []string{"*"}, []string{"nosniff"}
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hdr := w.Header()
		hdr["Content-Type"] = contentType
		hdr["Content-Length"] = length
		hdr["Cache-Control"] = cacheControl
		hdr["Etag"] = etag
		hdr["Access-Control-Allow-Origin"] = star
		hdr["X-Content-Type-Options"] = nosniff
		_, _ = w.Write(body)
	})

	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on %s", l.Addr())
	srv := &http.Server{Handler: h}
	if *timeouts {
		// The values of server.defaultServeLimits. With them net/http arms conn deadlines on
		// every request instead of clearing them.
		srv.ReadHeaderTimeout = 5 * time.Second
		srv.ReadTimeout = 10 * time.Second
		srv.WriteTimeout = 10 * time.Second
		srv.IdleTimeout = 2 * time.Minute
		srv.MaxHeaderBytes = 32 << 10
	}
	if *tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			log.Fatal(err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		log.Fatal(srv.ServeTLS(l, "", ""))
	}
	log.Fatal(srv.Serve(l))
}
