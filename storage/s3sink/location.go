package s3sink

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
)

// Location is where in S3 the documents of one issuer go.
type Location struct {
	Bucket string
	// Prefix is prepended to every object key: "" or ending with "/" ("cluster-a/").
	Prefix string
	// Region is the region named by the issuer URL's host (s3.eu-west-1.amazonaws.com), or "".
	Region string
	// Style says how the issuer URL addresses the bucket: StylePath, StyleVirtualHosted, or
	// StyleCustom for a domain of its own (CloudFront, a proxy) that S3 does not know about.
	Style Style
}

// Style is how an issuer URL addresses its bucket.
type Style string

// Addressing styles of an issuer URL.
const (
	StylePath          Style = "path"           // https://s3.REGION.amazonaws.com/BUCKET/PREFIX
	StyleVirtualHosted Style = "virtual-hosted" // https://BUCKET.s3.REGION.amazonaws.com/PREFIX
	StyleCustom        Style = "custom"         // https://oidc.example.com/PREFIX in front of the bucket
)

var (
	// region matches AWS region names: us-east-1, eu-west-1, us-gov-west-1, cn-north-1.
	region = `[a-z]{2}(?:-[a-z]+)+-[0-9]+`
	// s3Host matches the hosts of S3's REST endpoints (not its HTTP-only website endpoints):
	// s3.amazonaws.com, s3.REGION.amazonaws.com, s3-REGION.amazonaws.com (legacy),
	// s3.dualstack.REGION.amazonaws.com, s3-fips.REGION.amazonaws.com, and .com.cn in China.
	s3Host = regexp.MustCompile(`^s3(?:-fips)?(?:\.dualstack)?(?:[.-](` + region + `))?\.amazonaws\.com(?:\.cn)?$`)
	// s3WebsiteHost matches website endpoints, which serve plain HTTP only.
	s3WebsiteHost = regexp.MustCompile(`(?:^|\.)s3-website[.-]` + region + `\.amazonaws\.com(?:\.cn)?$`)
	// bucketName is S3's rule for general purpose bucket names.
	bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
)

// Resolve decides the bucket and key prefix for --mirror target (s3://BUCKET[/PREFIX]) so that
// the mirrored documents are reachable at the issuer URL, which is what relying parties fetch.
//
// When the issuer URL is itself an S3 URL (AWS's hosts, or endpoint's host for an S3-compatible
// store), bucket and prefix follow from it and target must agree:
//
//	https://s3.eu-west-1.amazonaws.com/my-bucket          → my-bucket, no prefix
//	https://my-bucket.s3.eu-west-1.amazonaws.com/cluster-a → my-bucket, prefix cluster-a/
//
// Otherwise the issuer URL is a custom domain in front of the bucket (CloudFront, a proxy): the
// bucket comes from target and the keys are target's prefix followed by the issuer URL's path.
// Virtual-hosted issuer URLs with dotted bucket names are refused: S3's wildcard certificate
// covers one DNS label only, so relying parties would fail TLS verification.
func Resolve(target *url.URL, issuerURL, endpoint string) (Location, error) {
	bucket, targetPrefix, err := parseTarget(target)
	if err != nil {
		return Location{}, err
	}
	issuer, err := url.Parse(issuerURL)
	if err != nil {
		return Location{}, fmt.Errorf("parsing issuer URL: %w", err)
	}
	segs, err := pathSegments(issuer.Path)
	if err != nil {
		return Location{}, fmt.Errorf("issuer URL %s: %w", issuerURL, err)
	}
	host := strings.ToLower(issuer.Host)
	if s3WebsiteHost.MatchString(issuer.Hostname()) {
		return Location{}, fmt.Errorf("issuer URL %s is an S3 website endpoint, which serves only plain HTTP; relying parties need HTTPS: use the bucket's REST URL (https://s3.REGION.amazonaws.com/%s) or a CloudFront distribution", issuerURL, bucket)
	}

	loc := Location{Style: StyleCustom}
	var urlBucket string
	var rest []string
	switch epHost := endpointHost(endpoint); {
	case epHost != "" && host == epHost:
		loc.Style = StylePath
	case epHost != "" && strings.HasSuffix(host, "."+epHost):
		loc.Style, urlBucket = StyleVirtualHosted, strings.TrimSuffix(host, "."+epHost)
	default:
		if issuer.Port() != "" {
			break // AWS's endpoints have no port in their URLs: a custom domain
		}
		labels := strings.Split(strings.ToLower(issuer.Hostname()), ".")
		for i := range labels {
			m := s3Host.FindStringSubmatch(strings.Join(labels[i:], "."))
			if m == nil {
				continue
			}
			loc.Region = m[1]
			if loc.Region == "" && !strings.HasSuffix(host, ".cn") {
				loc.Region = "us-east-1" // s3.amazonaws.com
			}
			if i == 0 {
				loc.Style = StylePath
			} else {
				loc.Style, urlBucket = StyleVirtualHosted, strings.Join(labels[:i], ".")
			}
			break
		}
	}

	switch loc.Style {
	case StylePath:
		if len(segs) == 0 {
			return Location{}, fmt.Errorf("issuer URL %s is a path-style S3 URL without a bucket: use %s/%s", issuerURL, strings.TrimSuffix(issuerURL, "/"), bucket)
		}
		urlBucket, rest = segs[0], segs[1:]
	case StyleVirtualHosted:
		if strings.Contains(urlBucket, ".") {
			return Location{}, fmt.Errorf("issuer URL %s addresses bucket %q virtual-hosted style, but the bucket name contains dots: S3's certificate *.%s matches a single DNS label, so relying parties (AWS STS among them) fail TLS verification. Use the path-style URL https://%s/%s%s, or a bucket name without dots",
				issuerURL, urlBucket, strings.TrimPrefix(host, urlBucket+"."), strings.TrimPrefix(host, urlBucket+"."), urlBucket, issuer.Path)
		}
		rest = segs
	case StyleCustom:
		loc.Bucket = bucket
		loc.Prefix = joinPrefix(append(targetPrefix, segs...))
		return loc, nil
	}

	if urlBucket != bucket {
		return Location{}, fmt.Errorf("--mirror s3://%s does not match issuer URL %s, which is served from bucket %q: the mirrored documents would not be at the issuer URL", bucket, issuerURL, urlBucket)
	}
	if targetPrefix != nil && strings.Join(targetPrefix, "/") != strings.Join(rest, "/") {
		return Location{}, fmt.Errorf("--mirror %s does not match issuer URL %s, whose documents live under %q in the bucket: drop the prefix from --mirror (it follows from the issuer URL) or fix it",
			target.Redacted(), issuerURL, joinPrefix(rest))
	}
	loc.Bucket = bucket
	loc.Prefix = joinPrefix(rest)
	return loc, nil
}

// parseTarget splits s3://BUCKET[/PREFIX]. A nil prefix means none was given.
func parseTarget(target *url.URL) (bucket string, prefix []string, err error) {
	if target.Scheme != "s3" {
		return "", nil, fmt.Errorf("--mirror %s: not an s3:// URL", target.Redacted())
	}
	if target.User != nil || target.Port() != "" || target.RawQuery != "" || target.Fragment != "" {
		return "", nil, fmt.Errorf("--mirror %s: use s3://BUCKET[/PREFIX] (credentials come from the AWS credential chain, the endpoint from --s3-endpoint)", target.Redacted())
	}
	bucket = target.Host
	if !bucketName.MatchString(bucket) || strings.Contains(bucket, "..") || net.ParseIP(bucket) != nil {
		return "", nil, fmt.Errorf("--mirror %s: %q is not a valid S3 bucket name (3-63 lowercase letters, digits, dots and hyphens)", target.Redacted(), bucket)
	}
	p := strings.Trim(target.Path, "/")
	if p == "" {
		return bucket, nil, nil
	}
	prefix, err = pathSegments("/" + p)
	if err != nil {
		return "", nil, fmt.Errorf("--mirror %s: %w", target.Redacted(), err)
	}
	return bucket, prefix, nil
}

// pathSegments splits a decoded URL path, refusing segments that URL normalisation would change.
func pathSegments(p string) ([]string, error) {
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return nil, nil
	}
	segs := strings.Split(p, "/")
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return nil, fmt.Errorf("path %q has an empty, '.' or '..' segment, which clients normalise away", "/"+p)
		}
	}
	return segs, nil
}

func joinPrefix(segs []string) string {
	if len(segs) == 0 {
		return ""
	}
	return strings.Join(segs, "/") + "/"
}

// endpointHost is the host[:port] of an endpoint URL, or "".
func endpointHost(endpoint string) string {
	if endpoint == "" {
		return ""
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Host)
}

// Partition is the AWS partition of a region, for ARNs.
func Partition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}
