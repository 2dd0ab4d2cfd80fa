// Command benchserve is `make bench-serve`: a scripted load run that prints figures. It is not a
// test and asserts nothing: the targets are reported PASS/MISS and the exit status is non-zero
// only when the run itself failed. Run it through hack/bench-serve.sh, which installs wrk and
// builds the binaries it is given.
//
// It brings up a real etcd and kube-apiserver (internal/testcluster), creates two Cluster API
// style signing-key Secrets, and starts the real `kube-oidc-issuer serve` watching both. Next to
// it runs integration/cmd/baseline, a bare net/http server writing the same JWKS bytes with the
// same headers. wrk loads each in turn (alternating, several rounds, median), and the issuer's
// throughput is reported as a ratio of the baseline's: both run on the same machine at the same
// moment, so the ratio is the cost of what the issuer does beyond copying bytes, largely free of
// the machine's speed and of noisy neighbours. Meanwhile the issuer's resident memory is sampled
// from /proc. Last, with the issuer under load, one Secret is changed again and again and the
// time until its new kid is served is measured.
//
// The public listener is plain HTTP by default: the ratio is meant to compare handler cost, and
// TLS would add the same large, constant cryptographic cost to both sides and hide it (it is also
// how the issuer runs behind an ingress that terminates TLS). --tls adds a second, TLS-only
// comparison for reference.
//
// Everything listens on 127.0.0.1 only, every loop is bounded in count and time, and everything
// started is stopped on return, on failure and on Ctrl-C; the children also die with this process
// (process groups with a parent-death signal).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Targets, reported and not asserted.
const (
	targetRatio          = 0.95
	targetRSS            = 40 << 20
	targetPropagationP99 = 250 * time.Millisecond
)

type options struct {
	issuerBin   string
	baselineBin string
	wrkBin      string
	workDir     string
	keepWorkDir bool

	duration    time.Duration
	warmup      time.Duration
	rounds      int
	threads     int
	connections int

	pin        bool
	serverCPUs string
	clientCPUs string
	// The lists parsed, when pinning.
	serverCPUList, clientCPUList []int
	gomaxprocs                   int

	quietWait time.Duration
	retries   int

	tls                bool
	propagationSamples int
	issuerEnv          stringList
	baselineArgs       stringList
	verbose            bool
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var o options
	flag.StringVar(&o.issuerBin, "issuer-bin", "", "kube-oidc-issuer binary, built as `make build` builds it (required)")
	flag.StringVar(&o.baselineBin, "baseline-bin", "", "integration/cmd/baseline binary (required)")
	flag.StringVar(&o.wrkBin, "wrk", "wrk", "wrk executable")
	flag.StringVar(&o.workDir, "work-dir", "", "where logs, keys and the cluster's data go (default: a new temporary directory, removed at the end)")
	flag.BoolVar(&o.keepWorkDir, "keep-work-dir", false, "keep the temporary work directory (logs, wrk output) for inspection")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each measured wrk run")
	flag.DurationVar(&o.warmup, "warmup", 3*time.Second, "length of the unmeasured warm-up run against each server")
	flag.IntVar(&o.rounds, "rounds", 3, "measured rounds; each loads the issuer and the baseline once, alternating which goes first")
	flag.IntVar(&o.threads, "threads", 1, "wrk threads")
	flag.IntVar(&o.connections, "connections", 50, "wrk connections")
	flag.BoolVar(&o.pin, "pin", true, "pin both servers to --server-cpus and wrk to --client-cpus (taskset), so that the load generator and the server under test do not compete for a CPU")
	flag.StringVar(&o.serverCPUs, "server-cpus", "1", "CPU list (taskset syntax) for the issuer and the baseline when pinning")
	flag.StringVar(&o.clientCPUs, "client-cpus", "0", "CPU list for wrk when pinning")
	flag.IntVar(&o.gomaxprocs, "gomaxprocs", 0, "GOMAXPROCS of both servers (default: the number of server CPUs when pinning, else the number of CPUs)")
	flag.DurationVar(&o.quietWait, "quiet-wait", 15*time.Second, "before each measured run, wait up to this long for other processes to use less than 5% of the machine (the report shows how much they took during each run)")
	flag.IntVar(&o.retries, "retries", 2, "how many times a round disturbed by other processes (more than 5% of the server's or wrk's CPU) is measured again; the least disturbed attempt is kept")
	flag.BoolVar(&o.tls, "tls", false, "also compare issuer and baseline serving TLS (for reference; the targets are taken from the plain run)")
	flag.IntVar(&o.propagationSamples, "propagation-samples", 20, "Secret changes whose propagation to the served JWKS is timed")
	flag.Var(&o.issuerEnv, "issuer-env", "KEY=VALUE added to the issuer's environment only (for experiments such as GODEBUG=gctrace=1 or GOGC=200); repeatable")
	flag.Var(&o.baselineArgs, "baseline-arg", "extra argument for the baseline (for experiments such as -timeouts); repeatable")
	flag.BoolVar(&o.verbose, "v", false, "log the test cluster's progress")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted (%w)", err)
		}
		fmt.Fprintln(os.Stderr, "bench-serve:", err)
		stop()
		os.Exit(1)
	}
}

func (o *options) validate() error {
	var errs []error
	if o.issuerBin == "" || o.baselineBin == "" {
		errs = append(errs, errors.New("--issuer-bin and --baseline-bin are required (hack/bench-serve.sh builds them)"))
	}
	if o.duration < time.Second || o.duration > 10*time.Minute {
		errs = append(errs, fmt.Errorf("--duration %s: want 1s to 10m", o.duration))
	}
	if o.warmup < 0 || o.warmup > time.Minute {
		errs = append(errs, fmt.Errorf("--warmup %s: want 0 to 1m", o.warmup))
	}
	if o.quietWait < 0 || o.quietWait > 10*time.Minute {
		errs = append(errs, fmt.Errorf("--quiet-wait %s: want 0 to 10m", o.quietWait))
	}
	if o.retries < 0 || o.retries > 5 {
		errs = append(errs, fmt.Errorf("--retries %d: want 0 to 5", o.retries))
	}
	if o.rounds < 1 || o.rounds > 20 {
		errs = append(errs, fmt.Errorf("--rounds %d: want 1 to 20", o.rounds))
	}
	if o.propagationSamples < 1 || o.propagationSamples > 200 {
		errs = append(errs, fmt.Errorf("--propagation-samples %d: want 1 to 200", o.propagationSamples))
	}
	if o.threads < 1 || o.connections < o.threads {
		errs = append(errs, errors.New("want --threads ≥ 1 and --connections ≥ --threads"))
	}
	for _, kv := range o.issuerEnv {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			errs = append(errs, fmt.Errorf("--issuer-env %q: want KEY=VALUE", kv))
		}
	}
	return errors.Join(errs...)
}

func run(ctx context.Context, o options) error {
	if err := o.validate(); err != nil {
		return err
	}
	for _, p := range []*string{&o.issuerBin, &o.baselineBin} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	if o.pin && runtime.NumCPU() < 2 {
		progress("only %d CPU: not pinning", runtime.NumCPU())
		o.pin = false
	}
	serverCPUCount := runtime.NumCPU()
	if o.pin {
		var err error
		if o.serverCPUList, err = parseCPUList(o.serverCPUs); err != nil {
			return fmt.Errorf("--server-cpus: %w", err)
		}
		if o.clientCPUList, err = parseCPUList(o.clientCPUs); err != nil {
			return fmt.Errorf("--client-cpus: %w", err)
		}
		for _, c := range o.serverCPUList {
			if slices.Contains(o.clientCPUList, c) {
				return fmt.Errorf("--server-cpus %s and --client-cpus %s overlap: wrk would compete with the server it measures", o.serverCPUs, o.clientCPUs)
			}
		}
		serverCPUCount = len(o.serverCPUList)
	}
	if o.gomaxprocs <= 0 {
		o.gomaxprocs = serverCPUCount
	}

	if o.workDir == "" {
		d, err := os.MkdirTemp("", "kube-oidc-issuer-bench-")
		if err != nil {
			return err
		}
		if o.keepWorkDir {
			progress("work directory (kept): %s", d)
		} else {
			defer os.RemoveAll(d)
		}
		o.workDir = d
	}

	var logOut io.Writer = io.Discard
	if o.verbose {
		logOut = os.Stderr
	}
	logger := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelInfo}))

	began := time.Now()
	b, err := setUp(ctx, o, logger)
	if b != nil {
		defer b.tearDown()
	}
	if err != nil {
		return err
	}

	var results []*modeResult
	plain, err := b.runMode(ctx, false)
	if err != nil {
		return err
	}
	results = append(results, plain)
	if o.tls {
		tlsResult, err := b.runMode(ctx, true)
		if err != nil {
			return err
		}
		results = append(results, tlsResult)
	}
	printReport(os.Stdout, o, results, time.Since(began))
	return nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...)
}
