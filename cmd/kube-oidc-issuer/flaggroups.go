package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/pflag"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam"
)

// Flags that several commands take are declared here, once: their name, default, help text and
// validation. A group binds its flags to fields of the command's own options (which code and tests
// keep using), so a command only says which groups it takes. Where a command uses a flag in a way
// of its own, it appends a short suffix to the base help text; the base text is the same in every
// command (TestSharedFlagsAreDeclaredOnce holds every command to it).

// flagGroupAnnotation marks a flag as declared by one of the groups below; its value names the
// group. TestSharedFlagsAreDeclaredOnce refuses a shared flag name declared without it.
const flagGroupAnnotation = "kube-oidc-issuer/flag-group"

// The base help texts.
const (
	issuerURLHelp      = "the issuer URL, byte for byte the tokens' iss and kube-apiserver's --service-account-issuer (https, no query, no trailing slash)"
	jwksURIHelp        = "the jwks_uri advertised in the discovery document (default: ISSUER_URL/openid/v1/jwks)"
	maxAgeHelp         = "Cache-Control max-age of both documents; relying parties may keep a JWKS this long, so a new key must be published at least this long before it signs"
	legacyEmptyKIDHelp = `also publish every key with "kid": "", for tokens minted before Kubernetes 1.16`
	secretHelp         = "signing-key Secret NAMESPACE/NAME whose keys are published"
	keyFileHelp        = "PEM key file to publish (e.g. kubeadm's sa.pub)"
	kubeconfigHelp     = "kubeconfig of the cluster"
	logLevelHelp       = "debug, info, warn or error"
	logFormatHelp      = "json or text"
)

// Help suffixes shared by several commands.
const (
	// iamProviderURLSuffix: the command checks the issuer URL against IAM's rules as well
	// (validateProviderURLFlag).
	iamProviderURLSuffix = "; also its IAM OpenID Connect provider's URL, which takes no port"
	// kubeconfigInClusterSuffix: the command loads the kubeconfig with kubeConfig.
	kubeconfigInClusterSuffix = " (default: in-cluster config, else $KUBECONFIG or ~/.kube/config)"
)

// The groups, as the annotation names them.
const (
	groupIssuer     = "issuer"
	groupDocuments  = "documents"
	groupKeySource  = "key-source"
	groupKubeconfig = "kubeconfig"
	groupLog        = "log"
)

// markShared annotates flag name of fs as declared by group.
func markShared(fs *pflag.FlagSet, name, group string) {
	if err := fs.SetAnnotation(name, flagGroupAnnotation, []string{group}); err != nil {
		panic(err) // the flag was declared just before: a programming error
	}
}

// issuerFlags is --issuer-url, bound to url.
type issuerFlags struct{ url *string }

// add declares --issuer-url; suffix ("" or "; ...") says what else the command makes of it.
func (f issuerFlags) add(fs *pflag.FlagSet, suffix string) {
	fs.StringVar(f.url, "issuer-url", "", issuerURLHelp+suffix)
	markShared(fs, "issuer-url", groupIssuer)
}

// validateIssuerURLFlag checks --issuer-url with the one set of issuer rules every command
// applies (documents.ValidateIssuerURL), so that serve, discovery, mirror, register, trust-policy
// and doctor accept and refuse the same URLs with the same message. Commands call it before they
// read a file or touch the network.
func validateIssuerURLFlag(issuerURL string) error {
	if issuerURL == "" {
		return errors.New("--issuer-url is required: the tokens' iss, byte for byte kube-apiserver's --service-account-issuer")
	}
	if err := documents.ValidateIssuerURL(issuerURL); err != nil {
		return fmt.Errorf("--issuer-url: %w", err)
	}
	return nil
}

// validateProviderURLFlag is validateIssuerURLFlag plus AWS IAM's rules for an OpenID Connect
// provider URL (no port, at most 255 characters), for the commands that name the provider
// (register, trust-policy, iam-policy; declared with iamProviderURLSuffix).
func validateProviderURLFlag(issuerURL string) error {
	if err := validateIssuerURLFlag(issuerURL); err != nil {
		return err
	}
	if err := iam.ValidateProviderURL(issuerURL); err != nil {
		return fmt.Errorf("--issuer-url: %w", err)
	}
	return nil
}

// documentFlags are the flags that shape the rendered documents, bound to cfg: --issuer-url,
// --jwks-uri, --max-age and --legacy-empty-kid.
type documentFlags struct{ cfg *documents.Config }

// add declares all four; issuerSuffix goes to --issuer-url's help.
func (f documentFlags) add(fs *pflag.FlagSet, issuerSuffix string) {
	f.addURLs(fs, issuerSuffix)
	fs.DurationVar(&f.cfg.MaxAge, "max-age", documents.DefaultMaxAge, maxAgeHelp)
	markShared(fs, "max-age", groupDocuments)
	addLegacyEmptyKIDFlag(fs, &f.cfg.JWKS.LegacyEmptyKID)
}

// addURLs declares only --issuer-url and --jwks-uri, for a command whose documents have no cache
// lifetime or legacy kid of their own (discovery).
func (f documentFlags) addURLs(fs *pflag.FlagSet, issuerSuffix string) {
	issuerFlags{&f.cfg.IssuerURL}.add(fs, issuerSuffix)
	addJWKSURIFlag(fs, &f.cfg.JWKSURI, "")
}

// addJWKSURIFlag declares --jwks-uri, bound to p, for a command that keeps it outside a
// documents.Config (register); suffix goes to its help.
func addJWKSURIFlag(fs *pflag.FlagSet, p *string, suffix string) {
	fs.StringVar(p, "jwks-uri", "", jwksURIHelp+suffix)
	markShared(fs, "jwks-uri", groupDocuments)
}

// addLegacyEmptyKIDFlag declares --legacy-empty-kid, bound to p, for a command that renders only
// the JWKS (jwks).
func addLegacyEmptyKIDFlag(fs *pflag.FlagSet, p *bool) {
	fs.BoolVar(p, "legacy-empty-kid", false, legacyEmptyKIDHelp)
	markShared(fs, "legacy-empty-kid", groupDocuments)
}

// validateDocumentFlags checks what documentFlags declare, issuer URL first, with the messages
// serve gives (documents.Config.Validate after validateIssuerURLFlag).
func validateDocumentFlags(cfg documents.Config) error {
	if err := validateIssuerURLFlag(cfg.IssuerURL); err != nil {
		return err
	}
	return cfg.Validate()
}

// keySourceFlags are where the published keys come from: --secret, --key-file, and --kubeconfig
// for the Secrets (and the command's other Kubernetes API clients, loaded with kubeConfig).
type keySourceFlags struct {
	secrets    *[]string
	keyFiles   *[]string
	kubeconfig *string
}

// add declares the three flags. follow says the command follows changes of the sources (serve)
// rather than reading them once (mirror); kubeconfigFor names the flags the kubeconfig is for.
func (f keySourceFlags) add(fs *pflag.FlagSet, follow bool, kubeconfigFor string) {
	secretSuffix, keyFileSuffix := "", ""
	if follow {
		secretSuffix, keyFileSuffix = ", watched for changes", ", re-read on change"
	}
	fs.StringSliceVar(f.secrets, "secret", nil, secretHelp+secretSuffix+"; repeatable")
	markShared(fs, "secret", groupKeySource)
	fs.StringSliceVar(f.keyFiles, "key-file", nil, keyFileHelp+keyFileSuffix+"; repeatable")
	markShared(fs, "key-file", groupKeySource)
	kubeconfigFlag{f.kubeconfig}.add(fs, ", for "+kubeconfigFor+kubeconfigInClusterSuffix)
}

// kubeconfigFlag is --kubeconfig, bound to path.
type kubeconfigFlag struct{ path *string }

// add declares --kubeconfig; suffix says what it is for and how it defaults (kubeConfig's
// lookup: kubeconfigInClusterSuffix).
func (f kubeconfigFlag) add(fs *pflag.FlagSet, suffix string) {
	fs.StringVar(f.path, "kubeconfig", "", kubeconfigHelp+suffix)
	markShared(fs, "kubeconfig", groupKubeconfig)
}

// logFlags are --log-level and --log-format, bound to level and format. A command without
// --log-format (format nil) logs text.
type logFlags struct {
	level  *string
	format *string
}

// add declares --log-level, and --log-format unless format is nil.
func (f logFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(f.level, "log-level", "info", logLevelHelp)
	markShared(fs, "log-level", groupLog)
	if f.format != nil {
		fs.StringVar(f.format, "log-format", "json", logFormatHelp)
		markShared(fs, "log-format", groupLog)
	}
}

// logger builds the command's logger on w with newLogger, which validates both flags.
func (f logFlags) logger(w io.Writer) (*slog.Logger, error) {
	format := "text"
	if f.format != nil {
		format = *f.format
	}
	return newLogger(w, *f.level, format)
}
