package s3sink

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage"
)

// EnsurePublicRead checks that anonymous readers may GET every key (relative to the sink's prefix)
// and, with Config.ManagePolicy, adds the missing grant to the bucket policy. Other statements are
// kept as they are. Public Access Block settings are never changed, only reported.
func (s *Sink) EnsurePublicRead(ctx context.Context, keys []string) (storage.AccessReport, error) {
	rep := storage.AccessReport{Managed: s.cfg.ManagePolicy}
	arns := make([]string, len(keys))
	for i, k := range keys {
		arns[i] = s.objectARN(k)
	}
	want := s.Statement(keys)

	pab := s.publicAccessBlock(ctx, &rep)
	current, err := s.bucketPolicy(ctx)
	if err != nil {
		if s.cfg.ManagePolicy {
			return rep, err
		}
		rep.Problems = append(rep.Problems, fmt.Sprintf("could not check whether the mirrored objects are public: %v. The bucket policy needs this statement: %s", err, want.json()))
		return rep, nil
	}
	ev, err := evaluate(current, arns)
	if err != nil {
		if s.cfg.ManagePolicy {
			return rep, fmt.Errorf("reading the policy of bucket %s: %w", s.cfg.Bucket, err)
		}
		rep.Problems = append(rep.Problems, fmt.Sprintf("the policy of bucket %s does not parse (%v)", s.cfg.Bucket, err))
		return rep, nil
	}
	if len(ev.missing) > 0 && s.cfg.ManagePolicy {
		if pab.blockPublicPolicy {
			return rep, fmt.Errorf("cannot grant public read on bucket %s: its Public Access Block has BlockPublicPolicy=true, so S3 refuses public bucket policies. Allow public policies on this bucket (aws s3api put-public-access-block --bucket %s --public-access-block-configuration BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=false,RestrictPublicBuckets=false) or publish through CloudFront",
				s.cfg.Bucket, s.cfg.Bucket)
		}
		merged, err := mergeStatement(current, want)
		if err != nil {
			return rep, fmt.Errorf("updating the policy of bucket %s: %w", s.cfg.Bucket, err)
		}
		if _, err := s.client.PutBucketPolicy(ctx, &s3.PutBucketPolicyInput{Bucket: aws.String(s.cfg.Bucket), Policy: aws.String(merged)}); err != nil {
			return rep, fmt.Errorf("granting public read on the mirrored objects in the policy of bucket %s: %w", s.cfg.Bucket, err)
		}
		if ev, err = evaluate(merged, arns); err != nil {
			return rep, err
		}
	}
	if len(ev.missing) > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf(
			"no statement in the policy of bucket %s grants anonymous s3:GetObject on %s, so relying parties (AWS STS) get 403 Forbidden. Add this statement to the bucket policy, or run with --s3-manage-bucket-policy: %s (not needed when the bucket is read only through CloudFront with origin access control)",
			s.cfg.Bucket, strings.Join(ev.missing, ", "), want.json()))
	}
	for _, d := range ev.denied {
		rep.Problems = append(rep.Problems, fmt.Sprintf("statement %q of the policy of bucket %s denies anonymous s3:GetObject on the mirrored objects", d, s.cfg.Bucket))
	}
	if pab.restrictPublicBuckets {
		rep.Problems = append(rep.Problems, fmt.Sprintf(
			"the Public Access Block of bucket %s has RestrictPublicBuckets=true: S3 ignores public bucket policies for anonymous requests, so relying parties get 403. Turn it off for this bucket: aws s3api put-public-access-block --bucket %s --public-access-block-configuration BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=false,RestrictPublicBuckets=false (an account-level Public Access Block must allow it too)",
			s.cfg.Bucket, s.cfg.Bucket))
	}
	rep.Public = len(ev.missing) == 0 && len(ev.denied) == 0 && !pab.restrictPublicBuckets
	return rep, nil
}

// Statement is the bucket policy statement that grants anonymous read of exactly keys (relative
// to the sink's prefix). Its Sid is derived from the prefix, so that issuers sharing a bucket
// under different prefixes each have their own.
func (s *Sink) Statement(keys []string) Statement {
	sum := sha256.Sum256([]byte(s.cfg.Bucket + "/" + s.cfg.Prefix))
	st := Statement{
		Sid:       "KubeOIDCIssuerPublicRead" + hex.EncodeToString(sum[:4]),
		Effect:    "Allow",
		Principal: "*",
		Action:    "s3:GetObject",
	}
	for _, k := range keys {
		st.Resource = append(st.Resource, s.objectARN(k))
	}
	return st
}

// Policy is a whole bucket policy holding only Statement(keys), for documentation and --dry-run.
func (s *Sink) Policy(keys []string) string {
	b, _ := json.MarshalIndent(struct {
		Version   string
		Statement []Statement
	}{"2012-10-17", []Statement{s.Statement(keys)}}, "", "  ")
	return string(b)
}

func (s *Sink) objectARN(key string) string {
	return "arn:" + s.partition + ":s3:::" + s.cfg.Bucket + "/" + s.objectKey(key)
}

// Statement is one bucket policy statement in the form this package writes.
type Statement struct {
	Sid       string   `json:"Sid"`
	Effect    string   `json:"Effect"`
	Principal string   `json:"Principal"`
	Action    string   `json:"Action"`
	Resource  []string `json:"Resource"`
}

func (st Statement) json() string {
	b, _ := json.Marshal(st)
	return string(b)
}

// bucketPolicy returns the bucket's policy document, or "" when it has none.
func (s *Sink) bucketPolicy(ctx context.Context) (string, error) {
	out, err := s.client.GetBucketPolicy(ctx, &s3.GetBucketPolicyInput{Bucket: aws.String(s.cfg.Bucket)})
	if err != nil {
		if isCode(err, "NoSuchBucketPolicy") {
			return "", nil
		}
		return "", fmt.Errorf("reading the policy of bucket %s: %w", s.cfg.Bucket, err)
	}
	return aws.ToString(out.Policy), nil
}

type publicAccessBlock struct {
	blockPublicPolicy, restrictPublicBuckets bool
}

// publicAccessBlock reads the bucket's Public Access Block. Stores without the API (MinIO) have
// none; a failure to read it is reported as a problem, since it may make the bucket private.
func (s *Sink) publicAccessBlock(ctx context.Context, rep *storage.AccessReport) publicAccessBlock {
	out, err := s.client.GetPublicAccessBlock(ctx, &s3.GetPublicAccessBlockInput{Bucket: aws.String(s.cfg.Bucket)})
	switch {
	case err == nil:
	case isCode(err, "NoSuchPublicAccessBlockConfiguration", "NotImplemented") || httpStatus(err) == http.StatusNotImplemented:
		return publicAccessBlock{}
	default:
		rep.Problems = append(rep.Problems, fmt.Sprintf("could not read the Public Access Block of bucket %s (%v); if it blocks public policies, relying parties get 403", s.cfg.Bucket, err))
		return publicAccessBlock{}
	}
	c := out.PublicAccessBlockConfiguration
	if c == nil {
		return publicAccessBlock{}
	}
	return publicAccessBlock{blockPublicPolicy: aws.ToBool(c.BlockPublicPolicy), restrictPublicBuckets: aws.ToBool(c.RestrictPublicBuckets)}
}

// policyStatement is a statement as found in a policy: most fields take a string or a list.
type policyStatement struct {
	Sid          string          `json:"Sid"`
	Effect       string          `json:"Effect"`
	Principal    json.RawMessage `json:"Principal"`
	NotPrincipal json.RawMessage `json:"NotPrincipal"`
	Action       stringList      `json:"Action"`
	NotAction    stringList      `json:"NotAction"`
	Resource     stringList      `json:"Resource"`
	NotResource  stringList      `json:"NotResource"`
	Condition    json.RawMessage `json:"Condition"`
}

type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*l = many
	return nil
}

// statements returns the raw statements of a policy document ("Statement" may be one object).
func statements(doc map[string]json.RawMessage) ([]json.RawMessage, error) {
	raw, ok := doc["Statement"]
	if !ok {
		return nil, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err == nil {
		return list, nil
	}
	var one map[string]json.RawMessage
	if err := json.Unmarshal(raw, &one); err != nil {
		return nil, errors.New("Statement is neither an object nor a list")
	}
	return []json.RawMessage{raw}, nil
}

type evaluation struct {
	missing []string // ARNs no unconditional public Allow covers
	denied  []string // Sids of unconditional public Denies covering one of the ARNs
}

// evaluate finds which ARNs an unconditional statement grants anonymous s3:GetObject on, and
// which an unconditional Deny takes away. Conditional statements are not evaluated: a conditional
// Allow does not count as public, a conditional Deny (commonly aws:SecureTransport=false) is
// assumed not to hit an HTTPS relying party.
func evaluate(policy string, arns []string) (evaluation, error) {
	ev := evaluation{}
	var sts []json.RawMessage
	if strings.TrimSpace(policy) != "" {
		var doc map[string]json.RawMessage
		if err := json.Unmarshal([]byte(policy), &doc); err != nil {
			return ev, err
		}
		var err error
		if sts, err = statements(doc); err != nil {
			return ev, err
		}
	}
	granted := make([]bool, len(arns))
	for _, raw := range sts {
		var st policyStatement
		if err := json.Unmarshal(raw, &st); err != nil {
			return ev, fmt.Errorf("statement %s: %w", raw, err)
		}
		if len(st.Condition) > 0 && string(st.Condition) != "{}" || len(st.NotPrincipal) > 0 || len(st.NotAction) > 0 || len(st.NotResource) > 0 {
			continue
		}
		if !publicPrincipal(st.Principal) || !anyMatch(st.Action, "s3:GetObject", true) {
			continue
		}
		for i, arn := range arns {
			if !anyMatch(st.Resource, arn, false) {
				continue
			}
			switch st.Effect {
			case "Allow":
				granted[i] = true
			case "Deny":
				ev.denied = append(ev.denied, st.Sid)
			}
		}
	}
	for i, g := range granted {
		if !g {
			ev.missing = append(ev.missing, arns[i])
		}
	}
	return ev, nil
}

// publicPrincipal reports whether a Principal is everyone: "*" or {"AWS": "*"} / {"AWS": ["*"]}.
func publicPrincipal(raw json.RawMessage) bool {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s == "*"
	}
	var m map[string]stringList
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	for _, v := range m["AWS"] {
		if v == "*" {
			return true
		}
	}
	return false
}

func anyMatch(patterns []string, s string, foldCase bool) bool {
	for _, p := range patterns {
		if foldCase {
			p, s = strings.ToLower(p), strings.ToLower(s)
		}
		if wildcardMatch(p, s) {
			return true
		}
	}
	return false
}

// wildcardMatch matches s against an IAM pattern, where * matches any run of characters and ?
// any one character.
func wildcardMatch(pattern, s string) bool {
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// mergeStatement returns policy with st added, replacing a statement with the same Sid; every
// other statement and member is kept byte for byte.
func mergeStatement(policy string, st Statement) (string, error) {
	doc := map[string]json.RawMessage{}
	if strings.TrimSpace(policy) != "" {
		if err := json.Unmarshal([]byte(policy), &doc); err != nil {
			return "", fmt.Errorf("parsing the bucket policy: %w", err)
		}
	}
	sts, err := statements(doc)
	if err != nil {
		return "", err
	}
	kept := make([]json.RawMessage, 0, len(sts)+1)
	for _, raw := range sts {
		var id struct{ Sid string }
		if json.Unmarshal(raw, &id) == nil && id.Sid == st.Sid {
			continue
		}
		kept = append(kept, raw)
	}
	ours, err := json.Marshal(st)
	if err != nil {
		return "", err
	}
	kept = append(kept, ours)
	if doc["Statement"], err = json.Marshal(kept); err != nil {
		return "", err
	}
	if _, ok := doc["Version"]; !ok {
		doc["Version"] = json.RawMessage(`"2012-10-17"`)
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return "", err
	}
	return string(out), nil
}
