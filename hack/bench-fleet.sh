#!/usr/bin/env bash
# `make bench-fleet`: fleet mode with 1,000 Cluster API clusters in one process, against a real
# kube-apiserver. Prints start → ready, RSS, Secret change → served (p50/p99) and the JWKS
# throughput of one fleet cluster against single-cluster serve, with PASS/MISS per target; exits
# non-zero only when the run itself failed. This script builds the release binary and hands over
# to integration/cmd/benchfleet (see its package comment). Environment:
#   CLUSTERS   clusters in the fleet (default 1000)
#   DURATION   length of each wrk run (default 10s)
#   ROUNDS     wrk rounds per server (default 3)
# Further arguments go to benchfleet (`--help` lists them, e.g. --pin=false, --work-dir DIR).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if ! command -v wrk >/dev/null 2>&1; then
	echo "==> installing wrk (Debian package)" >&2
	if [ "$(id -u)" -eq 0 ]; then
		apt-get update -qq && apt-get install -y -qq wrk >/dev/null
	else
		echo "bench-fleet: wrk is not installed and installing it needs root: sudo apt-get install wrk" >&2
		exit 1
	fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kube-oidc-issuer-bench-fleet-bin-XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "==> building kube-oidc-issuer (make build) and benchfleet" >&2
make --no-print-directory build BIN="$work/kube-oidc-issuer" >/dev/null
go build -o "$work/benchfleet" ./integration/cmd/benchfleet

"$work/benchfleet" \
	--issuer-bin "$work/kube-oidc-issuer" \
	--clusters "${CLUSTERS:-1000}" \
	--duration "${DURATION:-10s}" \
	--rounds "${ROUNDS:-3}" \
	"$@"
