// Package version carries the build's version information, stamped by the linker:
//
//	-ldflags "-X github.com/kube-oidc-issuer/kube-oidc-issuer/internal/version.version=v0.1.0
//	          -X github.com/kube-oidc-issuer/kube-oidc-issuer/internal/version.commit=abc123"
//
// These are the package's only variables; the linker can only stamp package-level strings.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

var (
	version = "dev"
	commit  = ""
)

// Info describes the running binary.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get returns the stamped version, falling back to the VCS revision Go records in the binary.
func Get() Info {
	i := Info{Version: version, Commit: commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if i.Commit == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					i.Commit = s.Value
				}
			}
		}
	}
	return i
}

func (i Info) String() string {
	s := "kube-oidc-issuer " + i.Version
	if i.Commit != "" {
		s += " (" + i.Commit + ")"
	}
	return fmt.Sprintf("%s %s %s", s, i.GoVersion, i.Platform)
}

// UserAgent is sent to the Kubernetes API and AWS.
func (i Info) UserAgent() string { return "kube-oidc-issuer/" + i.Version }
