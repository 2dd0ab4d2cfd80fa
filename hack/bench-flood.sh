#!/usr/bin/env bash
# A flood of the issuer's public listener (issue 13), with figures: the real `serve` binary (a
# release build), run with the shipped manifests' GOMEMLIMIT and every listener flag at its
# default, gets 5,000 idle keep-alive connections (plain, then TLS) and 1,000 more against an
# open-file limit of 512. It prints, per flood: the connections the issuer held, its resident
# memory (now and peak) against the pod's limit, how fast a fresh client got the JWKS, and /healthz
# latency during and after the flood; it fails when a bound is missed (64 Mi, 1 s).
#
# This is integration/flood_test.go run verbosely (`make bench-flood`); it needs nothing beyond Go:
# the flooded issuers watch a Secret in a real kube-apiserver, which the integration package's
# TestMain builds on first use (~5-15 min, then cached). Everything listens on 127.0.0.1 and is
# stopped at the end.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

out=$(mktemp "${TMPDIR:-/tmp}/kube-oidc-issuer-flood-XXXXXX")
trap 'rm -f "$out"' EXIT
status=0
go test -count=1 -timeout 10m -run '^TestPublicListenerFlood$' -v ./integration/ >"$out" 2>&1 || status=$?
# The figures and the verdicts, without the issuer's logs.
grep -E 'flood_test.go:[0-9]+: (.* flood:|before the flood|/healthz during|after the flood|peak RSS|a fresh client|/healthz)|^(---|ok|FAIL|PASS)|^\s+--- ' "$out" |
	sed -E 's/^ +flood_test.go:[0-9]+: /  /' || true
if [ "$status" -ne 0 ]; then
	echo "bench-flood: the flood test failed (exit $status); full output:" >&2
	tail -n 60 "$out" >&2
fi
exit "$status"
