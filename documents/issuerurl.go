package documents

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
	"unicode/utf8"
)

// IssuerURLError is why ValidateIssuerURL refuses an issuer URL: what is wrong with it, why
// relying parties care, and what to use instead. Callers that render many URLs (fleet templates)
// can show the parts separately; Error puts them in one line.
type IssuerURLError struct {
	// URL is the refused URL as given, with any password redacted.
	URL string
	// Problem says what is wrong, e.g. `the path holds the dot segment ".."`.
	Problem string
	// Reason says why relying parties cannot use such a URL.
	Reason string
	// Fix says what to give instead.
	Fix string
}

func (e *IssuerURLError) Error() string {
	if e.URL == "" {
		return fmt.Sprintf("issuer URL is empty: %s; %s", e.Reason, e.Fix)
	}
	return fmt.Sprintf("issuer URL %q: %s: %s; %s", e.URL, e.Problem, e.Reason, e.Fix)
}

// Reasons shared by several rules. Every relying party (AWS STS, kube-apiserver's JWT
// authenticator, go-oidc) compares the token's iss with the issuer URL it was configured with, and
// with the discovery document's issuer, byte for byte; and it fetches the documents from that URL
// through HTTP clients and proxies that normalise URLs (RFC 3986 §6). A URL that any of them would
// rewrite therefore breaks verification somewhere, even if it works in a browser.
const (
	whyRewritten  = "so the URL they fetch and compare differs from iss byte for byte"
	whyHTTPS      = "relying parties (AWS STS, kube-apiserver, go-oidc) fetch the discovery document and the JWKS only over HTTPS"
	whyHost       = "relying parties fetch the discovery document from the issuer's host"
	whyNoQuery    = "OpenID Connect Discovery 1.0 allows neither a query nor a fragment in an issuer"
	whyHostName   = "a host name holds only letters, digits, '-' and '.' (relying parties check it against the TLS certificate, and DNS names allow nothing else)"
	whyPathEscape = "clients percent-encode it, " + whyRewritten
	safePathChars = "letters, digits and - . _ ~ need no escaping"
)

// ValidateIssuerURL holds an issuer URL to the rules every command applies, so that it can be
// served, mirrored and compared byte for byte: exactly "https://", a lower-case ASCII host (an
// internationalised name in punycode), an optional port other than 443, and a path without
// query, fragment, trailing slash, empty or dot segments, and without anything a client would
// percent-encode, decode or re-case. The URL must be what url.Parse renders it back as.
//
// The error is an *IssuerURLError naming the problem, why relying parties refuse it, and the fix.
// AWS IAM has further rules (no port, at most 255 characters): iam.ValidateProviderURL.
func ValidateIssuerURL(raw string) error {
	// The error is printed and logged: never with a password, whatever else is wrong.
	shown := redactPassword(raw)
	bad := func(problem, reason, fix string) *IssuerURLError {
		return &IssuerURLError{URL: shown, Problem: problem, Reason: reason, Fix: fix}
	}
	if raw == "" {
		return bad("", "it is the tokens' iss claim, byte for byte kube-apiserver's --service-account-issuer",
			"give it, e.g. https://oidc.example.com/clusters/prod")
	}

	// Bytes no client sends as they are: they are what url.Parse would accept and String would
	// then render differently, or what it refuses with a less helpful message.
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == ' ':
			return bad("it holds a space", "clients send a space percent-encoded as %20, "+whyRewritten,
				"remove it (a path segment can use '-' instead)")
		case c < ' ' || c == 0x7f:
			return bad(fmt.Sprintf("it holds the control character %q", raw[i:i+1]), "no client sends it as it is, "+whyRewritten, "remove it")
		case c >= utf8.RuneSelf:
			_, size := utf8.DecodeRuneInString(raw[i:])
			char := raw[i : i+size]
			if _, host, end, ok := authority(raw); ok && host <= i && i < end {
				return bad(fmt.Sprintf("the host %q is not ASCII", raw[host:end]),
					"clients look up and send an internationalised domain name in its punycode (xn--) form, "+whyRewritten,
					`give the host in punycode (what "idn2 HOST" prints), here and in kube-apiserver's --service-account-issuer`)
			}
			return bad(fmt.Sprintf("it holds the non-ASCII character %q", char),
				"clients send it percent-encoded as UTF-8, "+whyRewritten, "use ASCII only ("+safePathChars+")")
		}
	}

	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return bad(fmt.Sprintf("it does not parse as a URL (%v)", err), "relying parties fetch the discovery document below it", "give https://HOST[:PORT][/PATH]")
	}

	if u.User != nil {
		// Checked first, so that no fix below repeats the credentials.
		// The fix names host and path only: a query or fragment (refused anyway) could repeat
		// the credentials' text.
		return bad(fmt.Sprintf("it holds user information (%q)", u.User.Username()+"@"),
			"relying parties never send credentials to an issuer, and they would be part of every token's iss",
			use("https://"+u.Host+u.EscapedPath()))
	}
	// url.Parse lower-cases the scheme; relying parties (and AWS IAM) do not.
	rawScheme := raw[:len(u.Scheme)]
	switch {
	case u.Scheme == "":
		return bad("it has no scheme", whyHTTPS, use("https://"+strings.TrimPrefix(raw, "//")))
	case u.Scheme != "https":
		return bad(fmt.Sprintf("the scheme is %q, not \"https\"", rawScheme), whyHTTPS, use("https"+raw[len(rawScheme):]))
	case rawScheme != "https":
		return bad(fmt.Sprintf("the scheme %q is not lower-case", rawScheme),
			"clients and proxies lower-case the scheme when they normalise a URL, "+whyRewritten+" (AWS IAM refuses it outright)",
			use("https"+raw[len(rawScheme):]))
	case u.Opaque != "":
		return bad(`it has no host ("https:" is not followed by "//")`, whyHost, use("https://"+u.Opaque))
	case u.Hostname() == "":
		return bad("it has no host", whyHost, "give https://HOST[/PATH]")
	}
	// Cut at the fragment first, as url.Parse does: a '?' after '#' belongs to the fragment.
	beforeFragment, fragment, hasFragment := strings.Cut(raw, "#")
	if q := strings.IndexByte(beforeFragment, '?'); q >= 0 {
		return bad(fmt.Sprintf("it has a query (%q)", beforeFragment[q:]),
			"relying parties append /.well-known/openid-configuration to the issuer URL, which would land in the query ("+whyNoQuery+")",
			use(strings.TrimRight(raw[:q], "/")))
	}
	if hasFragment {
		return bad(fmt.Sprintf("it has a fragment (%q)", "#"+fragment),
			"clients never send a fragment, so relying parties would fetch the documents from another URL than iss names ("+whyNoQuery+")",
			use(strings.TrimRight(beforeFragment, "/")))
	}

	// Now raw is exactly "https://" + host + path.
	const prefix = "https://"
	rest := raw[len(prefix):]
	end := strings.IndexByte(rest, '/')
	if end < 0 {
		end = len(rest)
	}
	host, rawPath := rest[:end], rest[end:]
	if err := validateHost(host, func(newHost string) string { return prefix + newHost + rawPath }, bad); err != nil {
		return err
	}
	if err := validatePath(rawPath, u.Path, func(newPath string) string { return prefix + host + newPath }, bad); err != nil {
		return err
	}

	// Whatever the rules above missed: the URL must be what clients render it as.
	if s := u.String(); s != raw {
		return bad(fmt.Sprintf("clients render it as %q", s), "relying parties compare iss byte for byte with the URL they fetched from", use(s))
	}
	return nil
}

// validateHost checks the host[:port] of an issuer URL; with(h) is the URL with host h instead.
func validateHost(host string, with func(string) string, bad func(problem, reason, fix string) *IssuerURLError) error {
	if lower := strings.ToLower(host); lower != host {
		return bad(fmt.Sprintf("the host %q is not lower-case", host),
			"host names are case-insensitive and clients lower-case them when they normalise a URL, "+whyRewritten, use(with(lower)))
	}
	name, port, hasPort := host, "", false
	if strings.HasPrefix(host, "[") {
		// An IPv6 literal: url.Parse checked the brackets and what may follow them.
		i := strings.IndexByte(host, ']')
		name = host[1:i]
		if rest := host[i+1:]; rest != "" {
			port, hasPort = rest[1:], true
		}
		addr, err := netip.ParseAddr(name)
		switch {
		case err != nil || !addr.Is6():
			return bad(fmt.Sprintf("the host %q is not an IPv6 address", host), whyHostName, "give a DNS name or an IP address")
		case addr.Zone() != "":
			return bad(fmt.Sprintf("the IPv6 address %q names a zone", name),
				"a zone means something only on the host that has it, so relying parties cannot reach the issuer there",
				"give a DNS name or a global IP address")
		}
		if canonical := addr.String(); canonical != name {
			return bad(fmt.Sprintf("the IPv6 address %q is not in its canonical form", name),
				"clients rewrite an IPv6 address to its canonical form when they normalise a URL, "+whyRewritten,
				use(with("["+canonical+"]"+host[i+1:])))
		}
	} else {
		if i := strings.LastIndexByte(host, ':'); i >= 0 {
			name, port, hasPort = host[:i], host[i+1:], true
		}
		for i := 0; i < len(name); i++ {
			if c := name[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
				return bad(fmt.Sprintf("the host %q holds %q", name, name[i:i+1]), whyHostName, "give a DNS name or an IP address")
			}
		}
		switch labels := strings.Split(name, "."); {
		case strings.HasSuffix(name, "."):
			return bad(fmt.Sprintf("the host %q ends with a dot", name),
				"clients drop the final dot of a fully qualified name (TLS SNI never carries it), "+whyRewritten,
				use(with(strings.TrimRight(name, ".")+host[len(name):])))
		case strings.HasPrefix(name, ".") || strings.Contains(name, ".."):
			return bad(fmt.Sprintf("the host %q has an empty label", name), "no DNS name has one, so no client can look it up", "remove the extra dot")
		case strings.Trim(labels[len(labels)-1], "0123456789") == "":
			// WHATWG URL parsers (browsers, and what fetches on their behalf) read a host whose
			// last label is a number as an IPv4 address and render it dotted-quad: 127.1 is
			// 127.0.0.1.
			if addr, err := netip.ParseAddr(name); err != nil || !addr.Is4() {
				return bad(fmt.Sprintf("the host %q is not an IPv4 address in dotted-quad form", name),
					"clients read a host name ending in a number as an IPv4 address and rewrite it, "+whyRewritten,
					"give a DNS name, or an IPv4 address as four decimal numbers")
			}
		}
	}
	if !hasPort {
		return nil
	}
	switch n, err := strconv.Atoi(port); {
	case port == "":
		return bad("the host ends with ':' but names no port", "clients drop an empty port when they normalise a URL, "+whyRewritten,
			use(with(strings.TrimSuffix(host, ":"))))
	case port == "443":
		return bad("it names the default port 443", "clients and proxies drop the default port when they normalise a URL, "+whyRewritten,
			use(with(strings.TrimSuffix(host, ":443"))))
	case err != nil || n < 1 || n > 65535 || port[0] == '0':
		return bad(fmt.Sprintf("the port %q is not a port number", port),
			"clients rewrite or refuse a port that is not 1 to 65535 written without leading zeros",
			"give the port as a plain number, or none for 443")
	}
	return nil
}

// validatePath checks the path of an issuer URL as given (rawPath) and as decoded (decoded);
// with(p) is the URL with path p instead.
func validatePath(rawPath, decoded string, with func(string) string, bad func(problem, reason, fix string) *IssuerURLError) error {
	for i := 0; i < len(rawPath); i++ {
		if c := rawPath[i]; !isPathChar(c) {
			return bad(fmt.Sprintf("the path holds %q", rawPath[i:i+1]), whyPathEscape, "leave it out ("+safePathChars+")")
		}
	}
	// Percent-escapes that normalisation rewrites (RFC 3986 §6.2.2): lower-case hex digits are
	// upper-cased, and escapes of unreserved characters are decoded. url.Parse has checked that
	// every '%' starts an escape. Other escapes (%20, %2F, ...) are stable and served as given.
	for i := strings.IndexByte(rawPath, '%'); i >= 0; i = next(rawPath, i) {
		esc := rawPath[i : i+3]
		if b, _ := strconv.ParseUint(esc[1:], 16, 8); isUnreserved(byte(b)) {
			return bad(fmt.Sprintf("the path holds the percent-escape %q of %q, which needs no escaping", esc, string(rune(b))),
				"clients and proxies decode it when they normalise a URL, "+whyRewritten, use(with(normalisePath(rawPath))))
		}
		if strings.ToUpper(esc) != esc {
			return bad(fmt.Sprintf("the path holds the percent-escape %q in lower case", esc),
				"clients and proxies upper-case escapes when they normalise a URL, "+whyRewritten, use(with(normalisePath(rawPath))))
		}
	}
	if rawPath == "" {
		return nil
	}
	// Segments are checked decoded: a proxy that decodes %2F sees the segments it separates.
	segs := strings.Split(decoded[1:], "/")
	cleaned := cleanPath(rawPath)
	fix := func(generic string) string {
		if cleaned == rawPath {
			return generic // the problem is in an escape; path.Clean cannot see it
		}
		return use(with(cleaned))
	}
	for _, seg := range segs {
		if seg == "." || seg == ".." {
			return bad(fmt.Sprintf("the path holds the dot segment %q", seg),
				"clients and proxies resolve dot segments before they fetch (RFC 3986 §5.2.4), so the documents would be fetched from another URL than iss names",
				fix(`write the path without "." and ".." segments`))
		}
	}
	for i, seg := range segs {
		if seg == "" && (i < len(segs)-1 || !strings.HasSuffix(rawPath, "/")) {
			return bad(`the path holds an empty segment ("//")`,
				"clients, proxies, S3 and web roots may merge the slashes, so the documents would be fetched from another URL than iss names",
				fix("write the path with single slashes"))
		}
	}
	if strings.HasSuffix(rawPath, "/") {
		return bad("it ends with a slash",
			"relying parties compare iss byte for byte and append /.well-known/openid-configuration to it, so with and without the slash are different issuers",
			use(with(strings.TrimRight(rawPath, "/"))))
	}
	return nil
}

// next returns the index of the '%' after the escape at i, or -1.
func next(s string, i int) int {
	j := strings.IndexByte(s[i+3:], '%')
	if j < 0 {
		return -1
	}
	return i + 3 + j
}

// normalisePath is what a normalising client makes of a path: escapes normalised, dot segments
// resolved, slashes merged; with no trailing slash, as an issuer path needs.
func normalisePath(p string) string {
	return cleanPath(normaliseEscapes(p))
}

// cleanPath resolves dot segments, merges slashes and drops a trailing slash ("/" becomes "").
func cleanPath(p string) string {
	if p = path.Clean(p); p == "/" {
		return ""
	}
	return p
}

// normaliseEscapes applies RFC 3986 §6.2.2.1 and §6.2.2.2 to a path whose escapes are valid.
func normaliseEscapes(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' {
			b.WriteByte(p[i])
			continue
		}
		esc := strings.ToUpper(p[i : i+3])
		if v, _ := strconv.ParseUint(esc[1:], 16, 8); isUnreserved(byte(v)) {
			b.WriteByte(byte(v))
		} else {
			b.WriteString(esc)
		}
		i += 2
	}
	return b.String()
}

// isUnreserved reports RFC 3986's unreserved characters, which never need escaping.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0
}

// isPathChar reports the characters RFC 3986 allows in a path (pchar and '/'), with '%' for
// escapes: everything else is percent-encoded by clients.
func isPathChar(c byte) bool {
	return isUnreserved(c) || strings.IndexByte("!$&'()*+,;=:@/%", c) >= 0
}

// authority returns where the authority of a URL string ("user:password@host:port", after
// "scheme://" or a leading "//") starts, where its host starts (after any user information), and
// where it ends.
func authority(raw string) (start, host, end int, ok bool) {
	if i := strings.Index(raw, "://"); i >= 0 {
		start = i + len("://")
	} else if strings.HasPrefix(raw, "//") {
		start = len("//")
	} else {
		return 0, 0, 0, false
	}
	end = len(raw)
	if j := strings.IndexAny(raw[start:], "/?#"); j >= 0 {
		end = start + j
	}
	host = start
	if at := strings.LastIndexByte(raw[start:end], '@'); at >= 0 {
		host = start + at + 1
	}
	return start, host, end, true
}

// redactPassword replaces the password in a URL string's user information, if any, the way
// url.URL.Redacted does, also in strings url.Parse refuses.
func redactPassword(raw string) string {
	start, host, _, ok := authority(raw)
	if !ok || host == start {
		return raw // no user information
	}
	user, _, hasPassword := strings.Cut(raw[start:host-1], ":")
	if !hasPassword {
		return raw
	}
	return raw[:start] + user + ":xxxxx@" + raw[host:]
}

func use(u string) string {
	return fmt.Sprintf("use %q", u)
}
