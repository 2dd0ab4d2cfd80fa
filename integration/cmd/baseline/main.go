// Command baseline is the yardstick of `make bench-serve`: a bare net/http handler that writes
// pre-rendered bytes with the same headers kube-oidc-issuer sends for the JWKS, and nothing else
// (no router, no metrics, no conditional requests; the same response headers). The issuer's throughput is reported as a ratio
// of this one's, measured in the same run on the same machine.
package main

import (
	"flag"
	"log"
	"net/http"
	"os"
	"strconv"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	bodyFile := flag.String("body", "", "file whose bytes every response carries")
	flag.Parse()
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		log.Fatal(err)
	}
	length := []string{strconv.Itoa(len(body))}
	contentType := []string{"application/jwk-set+json"}
	cacheControl := []string{"public, max-age=3600"}
	etag := []string{`"baseline"`}
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
	log.Fatal(http.ListenAndServe(*listen, h))
}
