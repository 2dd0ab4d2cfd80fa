#!/usr/bin/env bash
# `make bench-serve`: a load run of `kube-oidc-issuer serve` against a bare net/http baseline.
# It prints req/s, p99, the throughput ratio (with the issuer's listener protections all on, as
# they are by default), the issuer's RSS and the Secret → JWKS propagation time, with PASS/MISS per
# target; it exits non-zero only when the run itself failed. hack/bench-flood.sh is the
# companion for floods of idle connections.
#
# This script only installs wrk, builds the binaries and hands over to integration/cmd/benchserve,
# which does the work (see its package comment). Environment:
#   DURATION   length of each measured wrk run (default 10s)
#   ROUNDS     measured rounds, alternating issuer and baseline (default 3)
#   TLS=1      also compare both servers over TLS (reference figures, not targets)
# Further arguments are passed to benchserve (e.g. --pin=false, --keep-work-dir,
# --issuer-env GODEBUG=gctrace=1); `hack/bench-serve.sh --help` lists them.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if ! command -v wrk >/dev/null 2>&1; then
	echo "==> installing wrk (Debian package)" >&2
	if [ "$(id -u)" -eq 0 ]; then
		apt-get update -qq && apt-get install -y -qq wrk >/dev/null
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		sudo apt-get update -qq && sudo apt-get install -y -qq wrk >/dev/null
	else
		echo "bench-serve: wrk is not installed, and installing it needs root (apt-get install wrk)." >&2
		echo "Install it once with 'sudo apt-get install wrk' (or from https://github.com/wg/wrk), then rerun." >&2
		exit 1
	fi
fi
if ! command -v taskset >/dev/null 2>&1; then
	echo "bench-serve: taskset (util-linux) is missing: install it, or pass --pin=false" >&2
	exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kube-oidc-issuer-bench-bin-XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "==> building kube-oidc-issuer (make build), the baseline and benchserve" >&2
# The issuer exactly as released: make build's flags, no -race.
make --no-print-directory build BIN="$work/kube-oidc-issuer" >/dev/null
# The baseline gets the same build flags, so that the comparison is between handlers only.
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$work/baseline" ./integration/cmd/baseline
go build -o "$work/benchserve" ./integration/cmd/benchserve

# The issuer runs with serve's defaults, i.e. with every protection of the bounded listener on
# (connection cap shedding idle connections, header/write/idle timeouts swept per connection, a
# separate internal budget): the ratio benchserve prints is the one with all of them on.
echo "==> issuer protections (serve defaults, all on):" >&2
"$work/kube-oidc-issuer" serve --help 2>/dev/null |
	grep -E -- '--(max-connections|internal-max-connections|read-header-timeout|write-timeout|idle-timeout|idle-timeout-under-pressure) ' |
	sed -E 's/^ +(--[a-z-]+) [a-z]+ .*\(default ([^)]*)\)$/    \1 \2/; s/^ +(--max-connections) .* 0: ([0-9]+).*/    \1 \2 (plain)/' >&2 || true

# Not exec: the EXIT trap must still remove $work. Ctrl-C reaches benchserve too (same process
# group), which stops everything it started before exiting.
"$work/benchserve" \
	--issuer-bin "$work/kube-oidc-issuer" \
	--baseline-bin "$work/baseline" \
	--duration "${DURATION:-10s}" \
	--rounds "${ROUNDS:-3}" \
	$([ "${TLS:-0}" = 1 ] && echo --tls) \
	"$@"
