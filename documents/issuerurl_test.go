package documents_test

import (
	"errors"
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
)

// issuerURLCases are the issuer rules every command applies, with the exact error each refusal
// gives: what is wrong, why relying parties care, and the fix. "" means accepted.
var issuerURLCases = []struct {
	url, wantErr string
}{
	// Accepted: a port (not with IAM: iam.ValidateProviderURL), IP addresses, punycode, every
	// RFC 3986 path character, and escapes that normalisation keeps (server/ serves them as given).
	{`https://oidc.example.com`, ""},
	{`https://oidc.example.com/clusters/prod-1`, ""},
	{`https://s3.eu-west-1.amazonaws.com/my-bucket`, ""},
	{`https://oidc.example.com:8443`, ""},
	{`https://oidc.example.com:8443/clusters/prod`, ""},
	{`https://127.0.0.1:9000/bucket`, ""},
	{`https://[::1]:8443`, ""},
	{`https://[2001:db8::1]/x`, ""},
	{`https://xn--bcher-kva.example/x`, ""},
	{`https://oidc.example.com/Clusters/A_b~c-d.e`, ""},
	{`https://oidc.example.com/a:b@c!$&'()*+,;=`, ""},
	{`https://oidc.example.com/team%20a`, ""},
	{`https://oidc.example.com/a%2Fb`, ""},
	// Nothing.
	{"",
		`issuer URL is empty: it is the tokens' iss claim, byte for byte kube-apiserver's --service-account-issuer; give it, e.g. https://oidc.example.com/clusters/prod`},
	// Bytes no client sends as they are: a raw space, control characters, non-ASCII (a host must
	// be punycode).
	{`https://oidc.example.com/c d`,
		`issuer URL "https://oidc.example.com/c d": it holds a space: clients send a space percent-encoded as %20, so the URL they fetch and compare differs from iss byte for byte; remove it (a path segment can use '-' instead)`},
	{"https://oidc.example.com/c\td",
		`issuer URL "https://oidc.example.com/c\td": it holds the control character "\t": no client sends it as it is, so the URL they fetch and compare differs from iss byte for byte; remove it`},
	{"https://oidc.example.com/c\x7f",
		`issuer URL "https://oidc.example.com/c\x7f": it holds the control character "\x7f": no client sends it as it is, so the URL they fetch and compare differs from iss byte for byte; remove it`},
	{`https://bücher.example/x`,
		`issuer URL "https://bücher.example/x": the host "bücher.example" is not ASCII: clients look up and send an internationalised domain name in its punycode (xn--) form, so the URL they fetch and compare differs from iss byte for byte; give the host in punycode (what "idn2 HOST" prints), here and in kube-apiserver's --service-account-issuer`},
	{`https://oidc.example.com/bücher`,
		`issuer URL "https://oidc.example.com/bücher": it holds the non-ASCII character "ü": clients send it percent-encoded as UTF-8, so the URL they fetch and compare differs from iss byte for byte; use ASCII only (letters, digits and - . _ ~ need no escaping)`},
	{"https://oidc.example.com/\xff",
		`issuer URL "https://oidc.example.com/\xff": it holds the non-ASCII character "\xff": clients send it percent-encoded as UTF-8, so the URL they fetch and compare differs from iss byte for byte; use ASCII only (letters, digits and - . _ ~ need no escaping)`},
	// What url.Parse refuses.
	{`https://oidc.example.com:x/a`,
		`issuer URL "https://oidc.example.com:x/a": it does not parse as a URL (invalid port ":x" after host): relying parties fetch the discovery document below it; give https://HOST[:PORT][/PATH]`},
	{`https://oidc.example.com/%zz`,
		`issuer URL "https://oidc.example.com/%zz": it does not parse as a URL (invalid URL escape "%zz"): relying parties fetch the discovery document below it; give https://HOST[:PORT][/PATH]`},
	{`https://oidc.example.com/%`,
		`issuer URL "https://oidc.example.com/%": it does not parse as a URL (invalid URL escape "%"): relying parties fetch the discovery document below it; give https://HOST[:PORT][/PATH]`},
	{`https://a<b.example`,
		`issuer URL "https://a<b.example": the host "a<b.example" holds "<": a host name holds only letters, digits, '-' and '.' (relying parties check it against the TLS certificate, and DNS names allow nothing else); give a DNS name or an IP address`},
	// The scheme: exactly "https" (url.Parse lower-cases it, relying parties do not); a host after "//".
	{`HTTPS://oidc.example.com/a`,
		`issuer URL "HTTPS://oidc.example.com/a": the scheme "HTTPS" is not lower-case: clients and proxies lower-case the scheme when they normalise a URL, so the URL they fetch and compare differs from iss byte for byte (AWS IAM refuses it outright); use "https://oidc.example.com/a"`},
	{`Https://oidc.example.com`,
		`issuer URL "Https://oidc.example.com": the scheme "Https" is not lower-case: clients and proxies lower-case the scheme when they normalise a URL, so the URL they fetch and compare differs from iss byte for byte (AWS IAM refuses it outright); use "https://oidc.example.com"`},
	{`http://oidc.example.com`,
		`issuer URL "http://oidc.example.com": the scheme is "http", not "https": relying parties (AWS STS, kube-apiserver, go-oidc) fetch the discovery document and the JWKS only over HTTPS; use "https://oidc.example.com"`},
	{`ftp://oidc.example.com/a`,
		`issuer URL "ftp://oidc.example.com/a": the scheme is "ftp", not "https": relying parties (AWS STS, kube-apiserver, go-oidc) fetch the discovery document and the JWKS only over HTTPS; use "https://oidc.example.com/a"`},
	{`oidc.example.com`,
		`issuer URL "oidc.example.com": it has no scheme: relying parties (AWS STS, kube-apiserver, go-oidc) fetch the discovery document and the JWKS only over HTTPS; use "https://oidc.example.com"`},
	{`//oidc.example.com/a`,
		`issuer URL "//oidc.example.com/a": it has no scheme: relying parties (AWS STS, kube-apiserver, go-oidc) fetch the discovery document and the JWKS only over HTTPS; use "https://oidc.example.com/a"`},
	{`https:oidc.example.com`,
		`issuer URL "https:oidc.example.com": it has no host ("https:" is not followed by "//"): relying parties fetch the discovery document from the issuer's host; use "https://oidc.example.com"`},
	{`https:///a`,
		`issuer URL "https:///a": it has no host: relying parties fetch the discovery document from the issuer's host; give https://HOST[/PATH]`},
	{`https://`,
		`issuer URL "https://": it has no host: relying parties fetch the discovery document from the issuer's host; give https://HOST[/PATH]`},
	{`https://:8443/a`,
		`issuer URL "https://:8443/a": it has no host: relying parties fetch the discovery document from the issuer's host; give https://HOST[/PATH]`},
	// User information, checked before the scheme: never echoed with its password, whatever the
	// error.
	{`https://user@oidc.example.com`,
		`issuer URL "https://user@oidc.example.com": it holds user information ("user@"): relying parties never send credentials to an issuer, and they would be part of every token's iss; use "https://oidc.example.com"`},
	{`https://user:secret@oidc.example.com/a`,
		`issuer URL "https://user:xxxxx@oidc.example.com/a": it holds user information ("user@"): relying parties never send credentials to an issuer, and they would be part of every token's iss; use "https://oidc.example.com/a"`},
	{`http://user:secret@oidc.example.com/a`,
		`issuer URL "http://user:xxxxx@oidc.example.com/a": it holds user information ("user@"): relying parties never send credentials to an issuer, and they would be part of every token's iss; use "https://oidc.example.com/a"`},
	{`https://user:secret@oidc.example.com/a b`,
		`issuer URL "https://user:xxxxx@oidc.example.com/a b": it holds a space: clients send a space percent-encoded as %20, so the URL they fetch and compare differs from iss byte for byte; remove it (a path segment can use '-' instead)`},
	{`//user:secret@oidc.example.com/a`,
		`issuer URL "//user:xxxxx@oidc.example.com/a": it holds user information ("user@"): relying parties never send credentials to an issuer, and they would be part of every token's iss; use "https://oidc.example.com/a"`},
	// Query and fragment.
	{`https://oidc.example.com?x=1`,
		`issuer URL "https://oidc.example.com?x=1": it has a query ("?x=1"): relying parties append /.well-known/openid-configuration to the issuer URL, which would land in the query (OpenID Connect Discovery 1.0 allows neither a query nor a fragment in an issuer); use "https://oidc.example.com"`},
	{`https://oidc.example.com/a/?x=1`,
		`issuer URL "https://oidc.example.com/a/?x=1": it has a query ("?x=1"): relying parties append /.well-known/openid-configuration to the issuer URL, which would land in the query (OpenID Connect Discovery 1.0 allows neither a query nor a fragment in an issuer); use "https://oidc.example.com/a"`},
	{`https://oidc.example.com/a?`,
		`issuer URL "https://oidc.example.com/a?": it has a query ("?"): relying parties append /.well-known/openid-configuration to the issuer URL, which would land in the query (OpenID Connect Discovery 1.0 allows neither a query nor a fragment in an issuer); use "https://oidc.example.com/a"`},
	{`https://oidc.example.com#frag`,
		`issuer URL "https://oidc.example.com#frag": it has a fragment ("#frag"): clients never send a fragment, so relying parties would fetch the documents from another URL than iss names (OpenID Connect Discovery 1.0 allows neither a query nor a fragment in an issuer); use "https://oidc.example.com"`},
	{`https://oidc.example.com/a/#`,
		`issuer URL "https://oidc.example.com/a/#": it has a fragment ("#"): clients never send a fragment, so relying parties would fetch the documents from another URL than iss names (OpenID Connect Discovery 1.0 allows neither a query nor a fragment in an issuer); use "https://oidc.example.com/a"`},
	{`https://oidc.example.com/a#f?g`,
		`issuer URL "https://oidc.example.com/a#f?g": it has a fragment ("#f?g"): clients never send a fragment, so relying parties would fetch the documents from another URL than iss names (OpenID Connect Discovery 1.0 allows neither a query nor a fragment in an issuer); use "https://oidc.example.com/a"`},
	// The host: lower-case ASCII letters, digits, - and ., or a canonical IP address.
	{`https://OIDC.example.com/a`,
		`issuer URL "https://OIDC.example.com/a": the host "OIDC.example.com" is not lower-case: host names are case-insensitive and clients lower-case them when they normalise a URL, so the URL they fetch and compare differs from iss byte for byte; use "https://oidc.example.com/a"`},
	{`https://oidc.example.com:8443:1`,
		`issuer URL "https://oidc.example.com:8443:1": it does not parse as a URL (invalid port ":8443:1" after host): relying parties fetch the discovery document below it; give https://HOST[:PORT][/PATH]`},
	{`https://oidc_1.example.com`,
		`issuer URL "https://oidc_1.example.com": the host "oidc_1.example.com" holds "_": a host name holds only letters, digits, '-' and '.' (relying parties check it against the TLS certificate, and DNS names allow nothing else); give a DNS name or an IP address`},
	{`https://oidc.example.com./a`,
		`issuer URL "https://oidc.example.com./a": the host "oidc.example.com." ends with a dot: clients drop the final dot of a fully qualified name (TLS SNI never carries it), so the URL they fetch and compare differs from iss byte for byte; use "https://oidc.example.com/a"`},
	{`https://.oidc.example.com`,
		`issuer URL "https://.oidc.example.com": the host ".oidc.example.com" has an empty label: no DNS name has one, so no client can look it up; remove the extra dot`},
	{`https://oidc..example.com`,
		`issuer URL "https://oidc..example.com": the host "oidc..example.com" has an empty label: no DNS name has one, so no client can look it up; remove the extra dot`},
	{`https://127.1`,
		`issuer URL "https://127.1": the host "127.1" is not an IPv4 address in dotted-quad form: clients read a host name ending in a number as an IPv4 address and rewrite it, so the URL they fetch and compare differs from iss byte for byte; give a DNS name, or an IPv4 address as four decimal numbers`},
	{`https://010.0.0.1`,
		`issuer URL "https://010.0.0.1": the host "010.0.0.1" is not an IPv4 address in dotted-quad form: clients read a host name ending in a number as an IPv4 address and rewrite it, so the URL they fetch and compare differs from iss byte for byte; give a DNS name, or an IPv4 address as four decimal numbers`},
	{`https://[0:0::1]/a`,
		`issuer URL "https://[0:0::1]/a": the IPv6 address "0:0::1" is not in its canonical form: clients rewrite an IPv6 address to its canonical form when they normalise a URL, so the URL they fetch and compare differs from iss byte for byte; use "https://[::1]/a"`},
	{`https://[::FFFF:1.2.3.4]`,
		`issuer URL "https://[::FFFF:1.2.3.4]": the host "[::FFFF:1.2.3.4]" is not lower-case: host names are case-insensitive and clients lower-case them when they normalise a URL, so the URL they fetch and compare differs from iss byte for byte; use "https://[::ffff:1.2.3.4]"`},
	{`https://[fe80::1%25eth0]`,
		`issuer URL "https://[fe80::1%25eth0]": the IPv6 address "fe80::1%25eth0" names a zone: a zone means something only on the host that has it, so relying parties cannot reach the issuer there; give a DNS name or a global IP address`},
	// The port: 1-65535 as a plain number, never the default 443.
	{`https://oidc.example.com:`,
		`issuer URL "https://oidc.example.com:": the host ends with ':' but names no port: clients drop an empty port when they normalise a URL, so the URL they fetch and compare differs from iss byte for byte; use "https://oidc.example.com"`},
	{`https://oidc.example.com:/a`,
		`issuer URL "https://oidc.example.com:/a": the host ends with ':' but names no port: clients drop an empty port when they normalise a URL, so the URL they fetch and compare differs from iss byte for byte; use "https://oidc.example.com/a"`},
	{`https://oidc.example.com:443/a`,
		`issuer URL "https://oidc.example.com:443/a": it names the default port 443: clients and proxies drop the default port when they normalise a URL, so the URL they fetch and compare differs from iss byte for byte; use "https://oidc.example.com/a"`},
	{`https://oidc.example.com:0`,
		`issuer URL "https://oidc.example.com:0": the port "0" is not a port number: clients rewrite or refuse a port that is not 1 to 65535 written without leading zeros; give the port as a plain number, or none for 443`},
	{`https://oidc.example.com:08443`,
		`issuer URL "https://oidc.example.com:08443": the port "08443" is not a port number: clients rewrite or refuse a port that is not 1 to 65535 written without leading zeros; give the port as a plain number, or none for 443`},
	{`https://oidc.example.com:65536`,
		`issuer URL "https://oidc.example.com:65536": the port "65536" is not a port number: clients rewrite or refuse a port that is not 1 to 65535 written without leading zeros; give the port as a plain number, or none for 443`},
	// Path characters that clients percent-encode.
	{`https://oidc.example.com/a"b`,
		`issuer URL "https://oidc.example.com/a\"b": the path holds "\"": clients percent-encode it, so the URL they fetch and compare differs from iss byte for byte; leave it out (letters, digits and - . _ ~ need no escaping)`},
	{`https://oidc.example.com/a<b>`,
		`issuer URL "https://oidc.example.com/a<b>": the path holds "<": clients percent-encode it, so the URL they fetch and compare differs from iss byte for byte; leave it out (letters, digits and - . _ ~ need no escaping)`},
	{`https://oidc.example.com/a\b`,
		`issuer URL "https://oidc.example.com/a\\b": the path holds "\\": clients percent-encode it, so the URL they fetch and compare differs from iss byte for byte; leave it out (letters, digits and - . _ ~ need no escaping)`},
	{`https://oidc.example.com/a[0]`,
		`issuer URL "https://oidc.example.com/a[0]": the path holds "[": clients percent-encode it, so the URL they fetch and compare differs from iss byte for byte; leave it out (letters, digits and - . _ ~ need no escaping)`},
	{`https://oidc.example.com/a{b}`,
		`issuer URL "https://oidc.example.com/a{b}": the path holds "{": clients percent-encode it, so the URL they fetch and compare differs from iss byte for byte; leave it out (letters, digits and - . _ ~ need no escaping)`},
	{`https://oidc.example.com/a|b`,
		`issuer URL "https://oidc.example.com/a|b": the path holds "|": clients percent-encode it, so the URL they fetch and compare differs from iss byte for byte; leave it out (letters, digits and - . _ ~ need no escaping)`},
	{`https://oidc.example.com/a^b`,
		`issuer URL "https://oidc.example.com/a^b": the path holds "^": clients percent-encode it, so the URL they fetch and compare differs from iss byte for byte; leave it out (letters, digits and - . _ ~ need no escaping)`},
	{"https://oidc.example.com/a`b",
		"issuer URL \"https://oidc.example.com/a`b\": the path holds \"`\": clients percent-encode it, so the URL they fetch and compare differs from iss byte for byte; leave it out (letters, digits and - . _ ~ need no escaping)"},
	// Escapes that normalisation rewrites (RFC 3986 §6.2.2).
	{`https://oidc.example.com/a%2fb`,
		`issuer URL "https://oidc.example.com/a%2fb": the path holds the percent-escape "%2f" in lower case: clients and proxies upper-case escapes when they normalise a URL, so the URL they fetch and compare differs from iss byte for byte; use "https://oidc.example.com/a%2Fb"`},
	{`https://oidc.example.com/%41bc`,
		`issuer URL "https://oidc.example.com/%41bc": the path holds the percent-escape "%41" of "A", which needs no escaping: clients and proxies decode it when they normalise a URL, so the URL they fetch and compare differs from iss byte for byte; use "https://oidc.example.com/Abc"`},
	{`https://oidc.example.com/a/%2E%2E/b`,
		`issuer URL "https://oidc.example.com/a/%2E%2E/b": the path holds the percent-escape "%2E" of ".", which needs no escaping: clients and proxies decode it when they normalise a URL, so the URL they fetch and compare differs from iss byte for byte; use "https://oidc.example.com/b"`},
	{`https://oidc.example.com/a%7Eb`,
		`issuer URL "https://oidc.example.com/a%7Eb": the path holds the percent-escape "%7E" of "~", which needs no escaping: clients and proxies decode it when they normalise a URL, so the URL they fetch and compare differs from iss byte for byte; use "https://oidc.example.com/a~b"`},
	// Dot segments, also behind an escaped slash.
	{`https://oidc.example.com/c/../d`,
		`issuer URL "https://oidc.example.com/c/../d": the path holds the dot segment "..": clients and proxies resolve dot segments before they fetch (RFC 3986 §5.2.4), so the documents would be fetched from another URL than iss names; use "https://oidc.example.com/d"`},
	{`https://oidc.example.com/c/..`,
		`issuer URL "https://oidc.example.com/c/..": the path holds the dot segment "..": clients and proxies resolve dot segments before they fetch (RFC 3986 §5.2.4), so the documents would be fetched from another URL than iss names; use "https://oidc.example.com"`},
	{`https://oidc.example.com/./c`,
		`issuer URL "https://oidc.example.com/./c": the path holds the dot segment ".": clients and proxies resolve dot segments before they fetch (RFC 3986 §5.2.4), so the documents would be fetched from another URL than iss names; use "https://oidc.example.com/c"`},
	{`https://oidc.example.com/c/.`,
		`issuer URL "https://oidc.example.com/c/.": the path holds the dot segment ".": clients and proxies resolve dot segments before they fetch (RFC 3986 §5.2.4), so the documents would be fetched from another URL than iss names; use "https://oidc.example.com/c"`},
	{`https://oidc.example.com/..`,
		`issuer URL "https://oidc.example.com/..": the path holds the dot segment "..": clients and proxies resolve dot segments before they fetch (RFC 3986 §5.2.4), so the documents would be fetched from another URL than iss names; use "https://oidc.example.com"`},
	{`https://oidc.example.com/a%2F..%2Fb`,
		`issuer URL "https://oidc.example.com/a%2F..%2Fb": the path holds the dot segment "..": clients and proxies resolve dot segments before they fetch (RFC 3986 §5.2.4), so the documents would be fetched from another URL than iss names; write the path without "." and ".." segments`},
	// Empty segments.
	{`https://oidc.example.com/c//d`,
		`issuer URL "https://oidc.example.com/c//d": the path holds an empty segment ("//"): clients, proxies, S3 and web roots may merge the slashes, so the documents would be fetched from another URL than iss names; use "https://oidc.example.com/c/d"`},
	{`https://oidc.example.com//c`,
		`issuer URL "https://oidc.example.com//c": the path holds an empty segment ("//"): clients, proxies, S3 and web roots may merge the slashes, so the documents would be fetched from another URL than iss names; use "https://oidc.example.com/c"`},
	{`https://oidc.example.com//`,
		`issuer URL "https://oidc.example.com//": the path holds an empty segment ("//"): clients, proxies, S3 and web roots may merge the slashes, so the documents would be fetched from another URL than iss names; use "https://oidc.example.com"`},
	{`https://oidc.example.com/a%2F%2Fb`,
		`issuer URL "https://oidc.example.com/a%2F%2Fb": the path holds an empty segment ("//"): clients, proxies, S3 and web roots may merge the slashes, so the documents would be fetched from another URL than iss names; write the path with single slashes`},
	// A trailing slash.
	{`https://oidc.example.com/`,
		`issuer URL "https://oidc.example.com/": it ends with a slash: relying parties compare iss byte for byte and append /.well-known/openid-configuration to it, so with and without the slash are different issuers; use "https://oidc.example.com"`},
	{`https://oidc.example.com/cluster/`,
		`issuer URL "https://oidc.example.com/cluster/": it ends with a slash: relying parties compare iss byte for byte and append /.well-known/openid-configuration to it, so with and without the slash are different issuers; use "https://oidc.example.com/cluster"`},
	{`https://oidc.example.com/cluster//`,
		`issuer URL "https://oidc.example.com/cluster//": the path holds an empty segment ("//"): clients, proxies, S3 and web roots may merge the slashes, so the documents would be fetched from another URL than iss names; use "https://oidc.example.com/cluster"`},
	{`https://oidc.example.com/a/./`,
		`issuer URL "https://oidc.example.com/a/./": the path holds the dot segment ".": clients and proxies resolve dot segments before they fetch (RFC 3986 §5.2.4), so the documents would be fetched from another URL than iss names; use "https://oidc.example.com/a"`},
}

func TestValidateIssuerURL(t *testing.T) {
	for _, tc := range issuerURLCases {
		t.Run(tc.url, func(t *testing.T) {
			err := documents.ValidateIssuerURL(tc.url)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want %s", tc.wantErr)
			}
			if err.Error() != tc.wantErr {
				t.Fatalf("error\n got %s\nwant %s", err, tc.wantErr)
			}
			var ue *documents.IssuerURLError
			if !errors.As(err, &ue) || ue.Reason == "" || ue.Fix == "" || (tc.url != "" && ue.Problem == "") {
				t.Fatalf("error %#v does not give the problem, the reason and the fix apart", err)
			}
		})
	}
}

// TestValidateIssuerURLFixes: where an error names a URL to use instead, that URL does not have
// the same problem (one problem is reported at a time, so it may have another).
func TestValidateIssuerURLFixes(t *testing.T) {
	for _, tc := range issuerURLCases {
		var ue *documents.IssuerURLError
		if !errors.As(documents.ValidateIssuerURL(tc.url), &ue) || !strings.HasPrefix(ue.Fix, `use "`) {
			continue
		}
		fix := strings.TrimSuffix(strings.TrimPrefix(ue.Fix, `use "`), `"`)
		var again *documents.IssuerURLError
		if errors.As(documents.ValidateIssuerURL(fix), &again) && again.Problem == ue.Problem {
			t.Errorf("%q: the fix %q has the same problem: %v", tc.url, fix, again)
		}
	}
}

// FuzzValidateIssuerURL: the validator never panics, every refusal is an *IssuerURLError with a
// reason and a fix, and every URL it accepts is one relying parties can fetch and compare byte
// for byte: printable ASCII, what url.Parse renders it back as, https with a lower-case host and
// no default port, and a path that normalisation leaves alone.
func FuzzValidateIssuerURL(f *testing.F) {
	for _, tc := range issuerURLCases {
		f.Add(tc.url)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		err := documents.ValidateIssuerURL(raw)
		if err != nil {
			var ue *documents.IssuerURLError
			if !errors.As(err, &ue) || ue.Reason == "" || ue.Fix == "" || !strings.HasPrefix(err.Error(), "issuer URL ") {
				t.Fatalf("refusal of %q is not an IssuerURLError with a reason and a fix: %v", raw, err)
			}
			if u, perr := url.Parse(raw); perr == nil && u.User != nil {
				// The credentials as they stand in the authority ("//user:password@"); the same
				// characters elsewhere (a fragment "#:b@") are not the password.
				if p, ok := u.User.Password(); ok && p != "" && p != "xxxxx" && strings.Contains(err.Error(), "//"+u.User.String()+"@") {
					t.Fatalf("refusal of %q shows the password: %v", raw, err)
				}
			}
			return
		}
		for i := 0; i < len(raw); i++ {
			if raw[i] <= ' ' || raw[i] >= 0x7f {
				t.Fatalf("accepted %q with the byte %#x", raw, raw[i])
			}
		}
		u, perr := url.Parse(raw)
		if perr != nil {
			t.Fatalf("accepted %q, which does not parse: %v", raw, perr)
		}
		if s := u.String(); s != raw {
			t.Fatalf("accepted %q, which renders as %q", raw, s)
		}
		if !strings.HasPrefix(raw, "https://") || u.Scheme != "https" || u.Opaque != "" || u.User != nil ||
			u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(raw, "?#") {
			t.Fatalf("accepted %q: %#v", raw, u)
		}
		if u.Hostname() == "" || u.Host != strings.ToLower(u.Host) || strings.HasSuffix(u.Hostname(), ".") ||
			u.Port() == "443" || strings.HasSuffix(u.Host, ":") {
			t.Fatalf("accepted %q with the host %q", raw, u.Host)
		}
		if u.Path != "" {
			if u.Path != path.Clean(u.Path) {
				t.Fatalf("accepted %q, whose path %q has dot or empty segments or a trailing slash", raw, u.Path)
			}
			for _, seg := range strings.Split(u.Path[1:], "/") {
				if seg == "" || seg == "." || seg == ".." {
					t.Fatalf("accepted %q, whose path %q has the segment %q", raw, u.Path, seg)
				}
			}
		}
		// The documents are served and mirrored below the issuer's path exactly as given.
		if p := documents.PathPrefix(raw); p != u.EscapedPath() || !strings.HasSuffix(raw, p) {
			t.Fatalf("accepted %q, whose path prefix is %q", raw, p)
		}
	})
}
