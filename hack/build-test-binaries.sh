#!/usr/bin/env bash
# Builds the real components the integration tests run (kube-apiserver, etcd, MinIO) from the
# Go module proxy into a cache directory, and prints that directory. Each binary is rebuilt only when
# its pinned wrapper module (hack/tools/NAME/go.mod + go.sum) or the Go toolchain changes, so a warm
# run takes well under a second.
#
#   hack/build-test-binaries.sh [NAME...]     default: kube-apiserver etcd
#
# Environment: KOI_CACHE_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/kube-oidc-issuer).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${KOI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-oidc-issuer}
bindir="$cache/bin"
mkdir -p "$bindir"

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(kube-apiserver etcd)

log() { printf '[build-test-binaries] %s\n' "$*" >&2; }

build() {
  local name=$1 dir="$root/hack/tools/$1"
  [ -f "$dir/go.mod" ] || { log "unknown component $name (no $dir/go.mod)"; return 1; }
  local stamp
  stamp=$( { cat "$dir/go.mod" "$dir/go.sum" "$dir/build.env"; go version; } 2>/dev/null | sha256sum | cut -c1-16)
  local out="$bindir/$name" stampfile="$bindir/.$name.stamp"
  if [ -x "$out" ] && [ "$(cat "$stampfile" 2>/dev/null)" = "$stamp" ]; then
    log "$name: cached ($out)"
    return 0
  fi
  # build.env holds PKG and LDFLAGS for the component.
  local PKG="" LDFLAGS=""
  # shellcheck disable=SC1091
  . "$dir/build.env"
  log "$name: building $PKG from the Go module proxy (first run: several minutes, ~3 GB of build cache)..."
  local start=$SECONDS
  # The progress ticker keeps a person (and CI logs) informed during the long cold build.
  ( while sleep 30; do log "$name: still building ($((SECONDS - start))s)..."; done ) &
  local ticker=$!
  local rc=0
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -ldflags "$LDFLAGS" -o "$out.tmp" "$PKG") || rc=$?
  kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
  [ $rc -eq 0 ] || { log "$name: build failed"; rm -f "$out.tmp"; return $rc; }
  mv "$out.tmp" "$out"
  echo "$stamp" > "$stampfile"
  log "$name: built in $((SECONDS - start))s -> $out"
}

for n in "${names[@]}"; do build "$n"; done
echo "$bindir"
