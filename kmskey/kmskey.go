// Package kmskey keeps signing keys in AWS KMS: a key is created there (asymmetric, SIGN_VERIFY),
// only its ARN and public key leave KMS, and every signature is a kms:Sign call. A Signer is a
// crypto.Signer and a crypto.MessageSigner, so the external JWT signer uses it like a local key.
//
// Sign requests send the message itself (MessageType RAW; KMS hashes it) whenever it fits KMS's
// 4,096-byte limit, as a JWT signing input does: moto_server, which the tests run against, signs
// RAW messages correctly but treats a DIGEST as a message (../shared/REFERENCE.md). Every signature
// is verified locally with the public key before it is returned, so a wrong answer from KMS (or
// from a stand-in) never becomes a token nobody can verify.
package kmskey

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// API is the part of the KMS client this package uses (*kms.Client implements it).
type API interface {
	CreateKey(ctx context.Context, in *kms.CreateKeyInput, opts ...func(*kms.Options)) (*kms.CreateKeyOutput, error)
	GetPublicKey(ctx context.Context, in *kms.GetPublicKeyInput, opts ...func(*kms.Options)) (*kms.GetPublicKeyOutput, error)
	Sign(ctx context.Context, in *kms.SignInput, opts ...func(*kms.Options)) (*kms.SignOutput, error)
}

// Algorithms a KMS key can be created for, and the KMS key spec of each.
var keySpecs = map[string]types.KeySpec{
	"RS256": types.KeySpecRsa2048,
	"ES256": types.KeySpecEccNistP256,
}

// CallTimeout bounds one KMS call: crypto.Signer has no context, and kube-apiserver waits for the
// signature while it answers a TokenRequest.
const CallTimeout = 5 * time.Second

// maxRawMessage is the largest message kms:Sign accepts with MessageType RAW.
const maxRawMessage = 4096

// Create creates a signing key for alg (RS256: RSA_2048, ES256: ECC_NIST_P256) with tags, and
// returns it opened.
func Create(ctx context.Context, api API, alg, description string, tags map[string]string) (*Signer, error) {
	spec, ok := keySpecs[alg]
	if !ok {
		return nil, fmt.Errorf("creating a KMS key: algorithm %q: use RS256 or ES256", alg)
	}
	in := &kms.CreateKeyInput{
		KeySpec:     spec,
		KeyUsage:    types.KeyUsageTypeSignVerify,
		Description: aws.String(description),
	}
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		in.Tags = append(in.Tags, types.Tag{TagKey: aws.String(k), TagValue: aws.String(tags[k])})
	}
	cctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	out, err := api.CreateKey(cctx, in)
	if err != nil {
		return nil, fmt.Errorf("creating a KMS key (%s): %w", spec, err)
	}
	if out.KeyMetadata == nil || out.KeyMetadata.Arn == nil {
		return nil, errors.New("creating a KMS key: the answer has no key ARN")
	}
	return Open(ctx, api, *out.KeyMetadata.Arn)
}

// Open reads the public key of the KMS key arn and returns its Signer. It refuses keys that are not
// SIGN_VERIFY keys of a supported spec.
func Open(ctx context.Context, api API, arn string) (*Signer, error) {
	cctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	out, err := api.GetPublicKey(cctx, &kms.GetPublicKeyInput{KeyId: aws.String(arn)})
	if err != nil {
		return nil, fmt.Errorf("reading the public key of KMS key %s: %w", arn, err)
	}
	if out.KeyUsage != types.KeyUsageTypeSignVerify {
		return nil, fmt.Errorf("KMS key %s has usage %s, want SIGN_VERIFY", arn, out.KeyUsage)
	}
	pub, err := x509.ParsePKIXPublicKey(out.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("KMS key %s: parsing its public key: %w", arn, err)
	}
	s := &Signer{api: api, arn: arn, public: pub}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		s.algorithm, s.hash = types.SigningAlgorithmSpecRsassaPkcs1V15Sha256, crypto.SHA256
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("KMS key %s: curve %s, want P-256", arn, k.Curve.Params().Name)
		}
		s.algorithm, s.hash = types.SigningAlgorithmSpecEcdsaSha256, crypto.SHA256
	default:
		return nil, fmt.Errorf("KMS key %s: unsupported public key %T", arn, pub)
	}
	return s, nil
}

// Signer signs with one KMS key.
type Signer struct {
	api       API
	arn       string
	public    crypto.PublicKey
	algorithm types.SigningAlgorithmSpec
	hash      crypto.Hash
}

var (
	_ crypto.Signer        = (*Signer)(nil)
	_ crypto.MessageSigner = (*Signer)(nil)
)

// ARN is the key's ARN.
func (s *Signer) ARN() string { return s.arn }

// Public is the key's public half.
func (s *Signer) Public() crypto.PublicKey { return s.public }

// SignMessage signs msg (hashed by KMS with the key's hash). opts must name that hash.
func (s *Signer) SignMessage(_ io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil || opts.HashFunc() != s.hash {
		return nil, fmt.Errorf("KMS key %s signs with %s only", s.arn, s.hash)
	}
	if len(msg) > maxRawMessage {
		h := s.hash.New()
		h.Write(msg)
		return s.sign(h.Sum(nil), types.MessageTypeDigest, msg)
	}
	return s.sign(msg, types.MessageTypeRaw, msg)
}

// Sign signs a digest made with the key's hash (MessageType DIGEST).
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil || opts.HashFunc() != s.hash || len(digest) != s.hash.Size() {
		return nil, fmt.Errorf("KMS key %s signs %s digests only", s.arn, s.hash)
	}
	return s.sign(digest, types.MessageTypeDigest, nil)
}

// sign calls kms:Sign and verifies the answer against msg (or, when msg is nil, the digest).
func (s *Signer) sign(data []byte, mt types.MessageType, msg []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	defer cancel()
	out, err := s.api.Sign(ctx, &kms.SignInput{KeyId: aws.String(s.arn), Message: data, MessageType: mt, SigningAlgorithm: s.algorithm})
	if err != nil {
		return nil, fmt.Errorf("kms:Sign with %s: %w", s.arn, err)
	}
	digest := data
	if msg != nil {
		h := s.hash.New()
		h.Write(msg)
		digest = h.Sum(nil)
	}
	if err := s.verify(digest, out.Signature); err != nil {
		return nil, fmt.Errorf("kms:Sign with %s (MessageType %s) returned a signature that does not verify with the key's public key: %w", s.arn, mt, err)
	}
	return out.Signature, nil
}

func (s *Signer) verify(digest, sig []byte) error {
	switch k := s.public.(type) {
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, s.hash, digest, sig)
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			return errors.New("ECDSA verification failed")
		}
		return nil
	}
	return fmt.Errorf("unsupported public key %T", s.public)
}
