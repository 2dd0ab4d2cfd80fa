#!/usr/bin/env bash
# `make test-soak`, second half: every fuzz target of the module, one after the other.
#
# Targets are discovered, not listed here, so that a new Fuzz* function is fuzzed without editing
# this script: `go test -list '^Fuzz'` over every package of the module (deploy/test and hack/tools
# are modules of their own, with no parser of untrusted input). Each target runs with
# -fuzz '^Name$' -fuzztime FUZZTIME, and the script prints per target the time, the executions and
# the new interesting inputs found. A crasher fails its target (Go writes the input to the
# package's testdata/fuzz/NAME/, where it becomes a regression test once committed); the other
# targets still run, and the script exits non-zero at the end.
#
# Environment:
#   FUZZTIME      per target (default 5m); e.g. FUZZTIME=10s for a quick pass
#   FUZZ_LOG_DIR  where each target's full output goes (default: a new temporary directory)
#   FUZZ_PACKAGES packages to search (default ./...)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
fuzztime=${FUZZTIME:-5m}
logdir=${FUZZ_LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/koi-fuzz.XXXXXX")}
mkdir -p "$logdir"

# -short: the integration package's TestMain builds kube-apiserver unless -short; listing needs none
# of it. The names a package lists come before its "ok" line.
echo "==> discovering fuzz targets (go test -list '^Fuzz' ${FUZZ_PACKAGES:-./...})"
# A package whose tests do not build cannot be listed: it is reported and fails the run, and the
# other packages' targets still run.
list=$(go test -short -count=1 -list '^Fuzz' ${FUZZ_PACKAGES:-./...} 2>&1) || true
targets=()
names=()
unlisted=()
while IFS= read -r line; do
	case "$line" in
	Fuzz*) names+=("$line") ;;
	ok*)
		pkg=$(awk '{print $2}' <<<"$line")
		for n in ${names[@]+"${names[@]}"}; do targets+=("$pkg $n"); done
		names=()
		;;
	FAIL*)
		unlisted+=("$(awk '{print $2}' <<<"$line")")
		names=()
		;;
	*) names=() ;;
	esac
done <<<"$list"
if [ ${#unlisted[@]} -gt 0 ]; then
	echo "fuzz-all: could not list the targets of ${unlisted[*]}:" >&2
	grep -vE '^(Fuzz|ok|\?)' <<<"$list" | head -n 20 | sed 's/^/    /' >&2
fi
if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz-all: no fuzz target found" >&2
	exit 1
fi
echo "==> ${#targets[@]} targets, ${fuzztime} each; full output in $logdir"

began=$(date +%s)
failed=${#unlisted[@]}
summary=()
for pkg in ${unlisted[@]+"${unlisted[@]}"}; do
	summary+=("$(printf 'FAIL %-44s tests do not build: not fuzzed' "${pkg#github.com/kube-oidc-issuer/kube-oidc-issuer/}")")
done
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	log="$logdir/${pkg##*/}.$name.log"
	start=$(date +%s)
	status=PASS
	# -run limits the unit tests to this target's seed corpus; the package's other tests ran in
	# `make test`.
	if ! go test -count=1 -run "^${name}\$" -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" >"$log" 2>&1; then
		status=FAIL
		failed=$((failed + 1))
	fi
	took=$(($(date +%s) - start))
	# The last progress line: "fuzz: elapsed: 5m0s, execs: 123456 (411/sec), new interesting: 7 (total: 52)".
	# Its rate is that of the last interval only: the mean is computed from elapsed instead.
	last=$(grep -E '^fuzz: elapsed: .*execs: ' "$log" | tail -n 1 || true)
	execs=$(sed -nE 's/.*execs: ([0-9]+) .*/\1/p' <<<"$last")
	elapsed=$(sed -nE 's/^fuzz: elapsed: ([0-9hms]+),.*/\1/p' <<<"$last")
	rate=?
	if [ -n "$execs" ] && [ -n "$elapsed" ]; then
		secs=$(awk -v d="$elapsed" 'BEGIN { s = 0; while (match(d, /^[0-9]+[hms]/)) { n = substr(d, 1, RLENGTH - 1); u = substr(d, RLENGTH, 1); s += n * (u == "h" ? 3600 : u == "m" ? 60 : 1); d = substr(d, RLENGTH + 1) } print s }')
		[ "$secs" -gt 0 ] && rate="$((execs / secs))/s"
	fi
	interesting=$(sed -nE 's/.*new interesting: ([0-9]+) \(total: ([0-9]+)\).*/\1 (corpus \2)/p' <<<"$last")
	line=$(printf '%-4s %-44s %5ss  execs %10s %9s  new interesting %s' "$status" "${pkg#github.com/kube-oidc-issuer/kube-oidc-issuer/}.$name" "$took" "${execs:-?}" "$rate" "${interesting:-?}")
	echo "$line"
	summary+=("$line")
	if [ "$status" = FAIL ]; then
		echo "---- $name failed; last lines of $log:"
		tail -n 30 "$log" | sed 's/^/    /'
		grep -E 'Failing input written to|go test -run=' "$log" | sed 's/^/    /' || true
	fi
done

echo
echo "==== fuzz summary: ${#targets[@]} targets × ${fuzztime}, $(($(date +%s) - began))s, $failed failed ===="
printf '%s\n' "${summary[@]}"
[ "$failed" -eq 0 ]
