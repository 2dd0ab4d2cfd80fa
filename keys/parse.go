package keys

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// ParseError says which input and which PEM block could not be used, and why.
type ParseError struct {
	Input string // a file path or "secret NS/NAME key tls.crt"
	Block int    // 1-based index of the PEM block; 0 when the input as a whole is at fault
	Type  string // the PEM block type, when there is one
	Err   error
}

func (e *ParseError) Error() string {
	if e.Block == 0 {
		return fmt.Sprintf("%s: %v", e.Input, e.Err)
	}
	return fmt.Sprintf("%s: PEM block %d (%s): %v", e.Input, e.Block, e.Type, e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }

// ErrNoPEM is returned (wrapped in a ParseError) for input that holds no PEM block at all.
var ErrNoPEM = errors.New("no PEM block found")

// ParsePEM returns the public key of every PEM block in data, in order. It accepts PUBLIC KEY
// (PKIX), RSA PUBLIC KEY (PKCS#1), CERTIFICATE (its subject key), and the private key types RSA
// PRIVATE KEY, EC PRIVATE KEY and PRIVATE KEY (PKCS#8), of which only the public half is kept: the
// private key is dropped before this function returns. EC PARAMETERS blocks, which openssl writes in
// front of EC keys, are skipped. Any other block, a block that does not decode (truncated, END line
// missing, corrupted base64), or a key that cannot sign service-account tokens,
// fails the whole input with a *ParseError naming input and block, so that a half-understood
// input is never published partially.
func ParsePEM(input string, data []byte) ([]PublicKey, error) {
	var out []PublicKey
	rest := data
	if !bytes.HasPrefix(data, pemLineBegin[1:]) {
		// Text before the first block (comments, openssl -text output) is ignored.
		rest = nil
		if i := bytes.Index(data, pemLineBegin); i >= 0 {
			rest = data[i+1:]
		}
	}
	for block := 1; len(rest) > 0; block++ {
		// Cut the text at the next line starting a block and decode each piece on its own:
		// pem.Decode silently skips a block it cannot decode (truncated, END line missing, corrupted
		// base64) and would publish the other blocks of a half-understood input.
		seg := rest
		if i := bytes.Index(rest[1:], pemLineBegin); i >= 0 {
			seg, rest = rest[:i+2], rest[i+2:]
		} else {
			rest = nil
		}
		b, _ := pem.Decode(seg)
		if b == nil {
			return nil, &ParseError{Input: input, Block: block, Type: label(beginType(seg)),
				Err: errors.New("malformed PEM block (truncated, END line missing or corrupted base64)")}
		}
		if b.Type == "EC PARAMETERS" {
			continue
		}
		pub, err := publicFromBlock(b)
		if err == nil {
			var k PublicKey
			k, err = NewPublicKey(pub)
			out = append(out, k)
		}
		if err != nil {
			return nil, &ParseError{Input: input, Block: block, Type: label(b.Type), Err: withholdQuotes(err, data)}
		}
	}
	if len(out) == 0 {
		if len(bytes.TrimSpace(data)) == 0 {
			return nil, &ParseError{Input: input, Err: errors.New("empty")}
		}
		return nil, &ParseError{Input: input, Err: ErrNoPEM}
	}
	return out, nil
}

// pemLineBegin starts a PEM block; like encoding/pem, only at the start of a line (or of the input).
var pemLineBegin = []byte("\n-----BEGIN ")

// beginType is the block type named on the BEGIN line that starts seg.
func beginType(seg []byte) string {
	line, _, _ := bytes.Cut(seg, []byte("\n"))
	line = bytes.TrimPrefix(bytes.TrimSpace(line), pemLineBegin[1:])
	t, _, _ := bytes.Cut(line, []byte("-----"))
	return string(t)
}

// label returns a PEM block type fit for an error message: the type when it is one this parser
// knows (or one operators commonly supply by mistake), else a placeholder. Errors reach logs and
// /readyz, and the input may be a private key, so nothing else of it is repeated.
func label(t string) string {
	switch t {
	case "PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE", "RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY",
		"EC PARAMETERS", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY":
		return t
	}
	return "unsupported type"
}

// quoteWindow is the longest run of input bytes an error message may share with the input.
const quoteWindow = 16

// withholdQuotes returns err, unless its message repeats more than quoteWindow consecutive bytes of
// the input or of the DER inside it (x509 quotes some malformed certificate fields): then a generic
// error that says why the details are missing.
func withholdQuotes(err error, data []byte) error {
	msg := err.Error()
	if len(msg) <= quoteWindow {
		return err
	}
	hay := [][]byte{data}
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		hay = append(hay, b.Bytes)
	}
	for i := 0; i+quoteWindow < len(msg); i++ {
		for _, h := range hay {
			if bytes.Contains(h, []byte(msg[i:i+quoteWindow+1])) {
				return errors.New("malformed key material (details withheld: they would quote the input)")
			}
		}
	}
	return err
}

func publicFromBlock(b *pem.Block) (crypto.PublicKey, error) {
	if len(b.Headers) > 0 {
		// Encrypted legacy PEM ("Proc-Type: 4,ENCRYPTED") cannot be read without a passphrase.
		return nil, errors.New("PEM headers (an encrypted key?) are not supported")
	}
	switch b.Type {
	case "PUBLIC KEY":
		pub, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing PKIX public key: %w", err)
		}
		return pub, nil
	case "RSA PUBLIC KEY":
		pub, err := x509.ParsePKCS1PublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing PKCS#1 public key: %w", err)
		}
		return pub, nil
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate: %w", err)
		}
		return cert.PublicKey, nil
	case "RSA PRIVATE KEY":
		priv, err := x509.ParsePKCS1PrivateKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing PKCS#1 private key: %w", err)
		}
		return &priv.PublicKey, nil
	case "EC PRIVATE KEY":
		priv, err := x509.ParseECPrivateKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing EC private key: %w", err)
		}
		return &priv.PublicKey, nil
	case "PRIVATE KEY":
		priv, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing PKCS#8 private key: %w", err)
		}
		switch p := priv.(type) {
		case *rsa.PrivateKey:
			return &p.PublicKey, nil
		case *ecdsa.PrivateKey:
			return &p.PublicKey, nil
		default:
			return nil, fmt.Errorf("unsupported PKCS#8 key type %T: only RSA and ECDSA keys can sign service-account tokens", priv)
		}
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("encrypted private keys are not supported: provide the public key instead")
	default:
		return nil, errors.New("unsupported PEM block type: want PUBLIC KEY, RSA PUBLIC KEY, CERTIFICATE, or an RSA or EC private key")
	}
}
