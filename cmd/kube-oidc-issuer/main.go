// Command kube-oidc-issuer publishes a Kubernetes cluster's service-account token issuer (OIDC
// discovery document and JWKS) from the cluster's signing key, so that AWS IAM and other relying
// parties can verify the cluster's tokens.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

func main() {
	setGCDefaults()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// The first SIGINT/SIGTERM ends ctx and every command winds down through it (serve drains
	// its listeners). While NotifyContext holds the signals they no longer terminate the process,
	// so once ctx has ended the default handling is restored: should a command still be stuck
	// in something ctx cannot interrupt, a second signal ends the process.
	go func() {
		<-ctx.Done()
		stop()
	}()
	cmd := newRootCommand(os.Stdout, os.Stderr)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

// defaultGOGC is the garbage collector's target percentage when $GOGC is not set. It is chosen for
// `serve`, the one long-running command; the one-shot commands do not notice it.
//
// The document path allocates nothing of its own, but net/http allocates ~2.3 KB in 17 objects
// per request, and every GC cycle marks the whole live heap again: ~3 MB, most of it what package
// initialisation (client-go's scheme, the AWS SDK, ...) leaves for the life of the process. With
// Go's default of 100 the collector ran ~45 times a second under a JWKS load of ~75k req/s and
// took ~6 % of the server's CPU. 150 runs it about a third less often for ~2 MiB more resident
// memory (~37 MiB under load with two watched Secrets; the target is 40 MiB), about 2 % more
// throughput. 200 gained one more point but put the resident set at 40 MiB (`make bench-serve`).
//
// There is deliberately no default memory limit (GOMEMLIMIT): the runtime counts ~8 MiB besides
// the heap against it (GC metadata, stacks, retained spans), so a limit low enough to bound the
// resident set puts the heap goal below the live heap and the collector runs back to back
// (measured: 240 cycles a second at 12 MiB). $GOGC and $GOMEMLIMIT override as usual.
const defaultGOGC = 150

func setGCDefaults() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGOGC)
	}
}
