package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/version"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/server"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage/filesink"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage/mirror"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage/s3sink"
)

// mirrorOptions are the flags that say where documents are mirrored, shared by `serve` and
// `mirror`.
type mirrorOptions struct {
	targets      []string
	s3Region     string
	s3Endpoint   string
	s3PathStyle  bool
	s3ManagePol  bool
	reconcile    time.Duration
	withInterval bool
}

func (o *mirrorOptions) addFlags(f *pflag.FlagSet, serve bool) {
	f.StringSliceVar(&o.targets, "mirror", nil, "also publish the documents to s3://BUCKET[/PREFIX] or to a web root file:///DIR, at the issuer URL's path; repeatable")
	f.StringVar(&o.s3Region, "s3-region", "", "region of the --mirror bucket (default: from an S3 issuer URL, else AWS_REGION / the AWS config)")
	f.StringVar(&o.s3Endpoint, "s3-endpoint", "", "S3 endpoint URL for S3-compatible stores such as MinIO (default: AWS, or AWS_ENDPOINT_URL_S3)")
	f.BoolVar(&o.s3PathStyle, "s3-path-style", false, "address the bucket as ENDPOINT/BUCKET (needed by most S3-compatible stores)")
	f.BoolVar(&o.s3ManagePol, "s3-manage-bucket-policy", false, "add a statement granting anonymous s3:GetObject on exactly the two mirrored objects to the bucket policy (other statements are kept); without it the policy is only checked")
	if serve {
		o.withInterval = true
		f.DurationVar(&o.reconcile, "mirror-interval", mirror.DefaultReconcileInterval, "how often the mirrored objects are checked and repaired (deleted or edited objects) even without a key change")
	}
}

// endpoint is the S3 endpoint that decides whether the issuer URL is the bucket's own URL: the
// flag, else the SDK's standard environment variables.
func (o mirrorOptions) endpoint() string {
	for _, e := range []string{o.s3Endpoint, os.Getenv("AWS_ENDPOINT_URL_S3"), os.Getenv("AWS_ENDPOINT_URL")} {
		if e != "" {
			return e
		}
	}
	return ""
}

// sinks builds one sink per --mirror target. It checks everything that can be checked without
// the network (URLs, bucket names, issuer URL against bucket and prefix) and loads the AWS
// configuration, but contacts no store.
func (o mirrorOptions) sinks(ctx context.Context, issuerURL string) ([]storage.Sink, error) {
	if o.withInterval {
		if err := validatePositive("mirror-interval", o.reconcile); err != nil {
			return nil, err
		}
	}
	var out []storage.Sink
	seen := map[string]bool{}
	for _, t := range o.targets {
		u, err := url.Parse(t)
		if err != nil {
			return nil, fmt.Errorf("--mirror: %q is not a URL", t)
		}
		var sink storage.Sink
		switch u.Scheme {
		case "s3":
			sink, err = o.s3Sink(ctx, u, issuerURL)
		case "file":
			sink, err = filesink.Resolve(u, issuerURL)
		default:
			err = fmt.Errorf("--mirror %s: use s3://BUCKET[/PREFIX] or file:///DIR", u.Redacted())
		}
		if err != nil {
			return nil, err
		}
		if seen[sink.String()] {
			return nil, fmt.Errorf("--mirror %s given twice", sink)
		}
		seen[sink.String()] = true
		out = append(out, sink)
	}
	return out, nil
}

func (o mirrorOptions) s3Sink(ctx context.Context, target *url.URL, issuerURL string) (storage.Sink, error) {
	loc, err := s3sink.Resolve(target, issuerURL, o.endpoint())
	if err != nil {
		return nil, err
	}
	client, err := s3sink.NewClient(ctx, s3sink.ClientConfig{
		Region:     o.s3Region,
		RegionHint: loc.Region,
		Endpoint:   o.s3Endpoint,
		PathStyle:  o.s3PathStyle,
	})
	if err != nil {
		return nil, fmt.Errorf("--mirror %s: %w", target.Redacted(), err)
	}
	return s3sink.New(client, s3sink.Config{Bucket: loc.Bucket, Prefix: loc.Prefix, ManagePolicy: o.s3ManagePol})
}

// mirrors are the running mirrors of `serve`.
type mirrors []*mirror.Mirror

// newMirrors builds a mirror per --mirror target, with metrics on reg.
func newMirrors(ctx context.Context, logger *slog.Logger, o mirrorOptions, issuerURL string, reg prometheus.Registerer) (mirrors, error) {
	sinks, err := o.sinks(ctx, issuerURL)
	if err != nil || len(sinks) == 0 {
		return nil, err
	}
	metrics, err := mirror.NewMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("registering the mirror metrics: %w", err)
	}
	out := make(mirrors, 0, len(sinks))
	for _, s := range sinks {
		logger.Info("mirroring documents", "sink", s.String(), "jwks", s.Location(storage.Key(documents.JWKSPath)),
			"discovery", s.Location(storage.Key(documents.DiscoveryPath)), "s3Endpoint", o.s3Endpoint, "manageBucketPolicy", o.s3ManagePol)
		out = append(out, mirror.New(s, mirror.Options{Logger: logger.With("component", "mirror"), Metrics: metrics, ReconcileInterval: o.reconcile}))
	}
	return out, nil
}

// publishers hands the mirrors to the renderer; their Publish never blocks it.
func (ms mirrors) publishers() []publisher {
	out := make([]publisher, len(ms))
	for i, m := range ms {
		out[i] = m
	}
	return out
}

// runOn registers every mirror's publish loop as leader-only work: every replica hands the
// mirrors each new document set (Publish never blocks), one replica writes them.
func (ms mirrors) runOn(tasks leaderTasks) {
	for _, m := range ms {
		tasks.Go("mirror "+m.Sink().String(), m.Run)
	}
}

// readiness reports the mirrors on /readyz under "mirrors". A failing mirror never makes the
// issuer unready: the issuer itself still serves correct documents, and taking it out of its load
// balancer would not repair the bucket. It shows in the details and in the metrics
// (kube_oidc_issuer_mirror_*), which is where alerts belong.
func (ms mirrors) readiness() []server.ReadinessCheck {
	if len(ms) == 0 {
		return nil
	}
	return []server.ReadinessCheck{{
		Name: "mirrors",
		Check: func() (bool, any) {
			st := make([]mirror.Status, len(ms))
			for i, m := range ms {
				st[i] = m.Status()
			}
			return true, st
		},
	}}
}

// mirrorCommandOptions are the flags of `mirror`.
type mirrorCommandOptions struct {
	docs       documents.Config
	secrets    []string
	keyFiles   []string
	kubeconfig string
	mirror     mirrorOptions
	dryRun     bool
	timeout    time.Duration
	logLevel   string
}

func newMirrorCommand() *cobra.Command {
	o := mirrorCommandOptions{}
	logs := logFlags{level: &o.logLevel}
	cmd := &cobra.Command{
		Use:   "mirror --issuer-url URL --mirror TARGET... (--secret NAMESPACE/NAME | --key-file PATH)...",
		Short: "Publish the documents to S3 or a web root once and exit (bootstrap, CI pipelines)",
		Long: `Read the keys once (from Secrets and/or key files, exactly as serve does), render the discovery
document and JWKS, and publish them to every --mirror target: JWKS first, discovery second, each
only if the stored object differs. For S3, the bucket policy is checked (or, with
--s3-manage-bucket-policy, updated) so that relying parties can read the two objects anonymously.

--dry-run prints what would be written where, and the bucket policy statement needed, without
contacting any store.`,
		Example: `  kube-oidc-issuer mirror --issuer-url https://s3.eu-west-1.amazonaws.com/my-oidc-bucket \
      --mirror s3://my-oidc-bucket --key-file /etc/kubernetes/pki/sa.pub --s3-manage-bucket-policy
  kube-oidc-issuer mirror --issuer-url https://oidc.example.com/cluster-a --mirror file:///srv/www/oidc \
      --secret eksa-system/mycluster-sa --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := logs.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return runMirror(cmd.Context(), logger, cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	documentFlags{&o.docs}.add(f, "")
	keySourceFlags{&o.secrets, &o.keyFiles, &o.kubeconfig}.add(f, false, "--secret")
	f.BoolVar(&o.dryRun, "dry-run", false, "print what would be written where; contact no store")
	f.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up (exit status 1) if keys cannot be read and every target written within this time; failed writes are retried until then")
	logs.add(f)
	o.mirror.addFlags(f, false)
	return cmd
}

func runMirror(ctx context.Context, logger *slog.Logger, out io.Writer, o mirrorCommandOptions) error {
	if err := validateDocumentFlags(o.docs); err != nil {
		return err
	}
	if len(o.mirror.targets) == 0 {
		return errors.New("no --mirror target: give s3://BUCKET[/PREFIX] or file:///DIR")
	}
	if err := validatePositive("timeout", o.timeout); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	sinks, err := o.mirror.sinks(ctx, o.docs.IssuerURL)
	if err != nil {
		return err
	}
	set, err := readKeysOnce(ctx, logger, serveOptions{secrets: o.secrets, keyFiles: o.keyFiles, kubeconfig: o.kubeconfig})
	if err != nil {
		return err
	}
	docs, err := documents.Render(o.docs, set, 1, time.Now())
	if err != nil {
		return err
	}
	if o.dryRun {
		return printPlan(out, o.docs.IssuerURL, docs, sinks)
	}
	var errs []error
	for _, s := range sinks {
		if err := mirrorOnce(ctx, logger, out, s, docs); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// readKeysOnce runs the same key sources as serve until they have all delivered keys, and returns
// the set they make.
func readKeysOnce(ctx context.Context, logger *slog.Logger, o serveOptions) (keys.Set, error) {
	if len(o.secrets) == 0 && len(o.keyFiles) == 0 {
		return keys.Set{}, errors.New("no key source: give --secret NAMESPACE/NAME and/or --key-file PATH")
	}
	for _, s := range o.secrets {
		if _, _, err := splitSecretRef(s); err != nil {
			return keys.Set{}, err
		}
	}
	sources, err := buildSources(logger, o, version.Get().UserAgent())
	if err != nil {
		return keys.Set{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var set keys.Set
	got := false
	collector, err := keys.NewCollector(logger, func(s keys.Set) {
		if !got {
			set, got = s, true
			cancel()
		}
	}, sources...)
	if err != nil {
		return keys.Set{}, err
	}
	runErr := collector.Run(ctx)
	if got {
		return set, nil
	}
	if runErr != nil {
		return keys.Set{}, runErr
	}
	var problems []string
	for _, st := range collector.Status() {
		if !st.Ready {
			problems = append(problems, st.Name+": "+st.LastError)
		}
	}
	return keys.Set{}, fmt.Errorf("reading keys: %w (%s)", context.Cause(ctx), strings.Join(problems, "; "))
}

// oneShotBackoff is the wait between failed attempts of a one-shot mirror: 250ms doubling to 10s,
// without jitter (one process, nobody to fall into step with). Steps is unbounded in practice, so
// only Cap ends the doubling; mirrorOnce retries until ctx ends.
func oneShotBackoff() wait.Backoff {
	return wait.Backoff{Duration: 250 * time.Millisecond, Factor: 2, Cap: 10 * time.Second, Steps: math.MaxInt32}
}

// mirrorOnce publishes docs to one sink, retrying failures until ctx ends, then ensures public
// read where the sink controls it.
func mirrorOnce(ctx context.Context, logger *slog.Logger, out io.Writer, s storage.Sink, docs *documents.Set) error {
	backoff := oneShotBackoff()
	var res storage.Result
	var err error
	for {
		res, err = storage.Publish(ctx, s, docs)
		if err == nil || ctx.Err() != nil {
			break
		}
		delay := backoff.Step()
		logger.Warn("mirroring failed; retrying", "sink", s.String(), "retryIn", delay, "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
	}
	if err != nil {
		return fmt.Errorf("mirroring to %s: %w", s, err)
	}
	for _, k := range res.Written {
		fmt.Fprintf(out, "wrote     %s\n", s.Location(k))
	}
	for _, k := range res.Unchanged {
		fmt.Fprintf(out, "unchanged %s\n", s.Location(k))
	}
	for _, e := range res.StatErrors {
		logger.Warn("could not read an existing object; it was rewritten", "error", e)
	}
	am, ok := s.(storage.AccessManager)
	if !ok {
		return nil
	}
	rep, err := am.EnsurePublicRead(ctx, storage.Keys())
	if err != nil {
		return fmt.Errorf("mirroring to %s: %w", s, err)
	}
	if rep.Public {
		fmt.Fprintf(out, "public    %s (bucket policy grants anonymous read)\n", s)
	}
	for _, p := range rep.Problems {
		logger.Warn("mirrored documents may not be publicly readable", "sink", s.String(), "problem", p)
	}
	return nil
}

// printPlan prints, for --dry-run, every object that would be written and the policy S3 needs.
func printPlan(out io.Writer, issuer string, docs *documents.Set, sinks []storage.Sink) error {
	var b strings.Builder
	fmt.Fprintf(&b, "dry run: nothing is written\nissuer %s\nkeys   %s\n", issuer, strings.Join(docs.Keys.KeyIDs(), ", "))
	for _, s := range sinks {
		fmt.Fprintf(&b, "\n%s\n", s)
		for _, o := range storage.Objects(docs) {
			fmt.Fprintf(&b, "  would write %s\n    %d bytes, sha256 %s", s.Location(o.Key), len(o.Body), o.SHA256)
			if _, isS3 := s.(*s3sink.Sink); isS3 {
				fmt.Fprintf(&b, ", Content-Type: %s, Cache-Control: %s", o.ContentType, o.CacheControl)
			} else {
				fmt.Fprintf(&b, " (the web server must send Content-Type: %s, Cache-Control: %s)", o.ContentType, o.CacheControl)
			}
			b.WriteString("\n")
		}
		if s3s, ok := s.(*s3sink.Sink); ok {
			fmt.Fprintf(&b, "  bucket policy granting anonymous read of exactly these objects:\n%s\n", indent(s3s.Policy(storage.Keys()), "    "))
		}
	}
	b.WriteString("\n--- openid/v1/jwks\n")
	b.Write(docs.JWKS.Body)
	b.WriteString("\n--- .well-known/openid-configuration\n")
	b.Write(docs.Discovery.Body)
	b.WriteString("\n")
	_, err := io.WriteString(out, b.String())
	return err
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}
