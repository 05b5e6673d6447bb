#!/bin/sh
# Builds the checkers the benchmark compares against, from the Go module proxy, into
# ${XDG_CACHE_HOME:-~/.cache}/memory-hygiene/bench-bin. Also creates bench/.venv.
#
# Popeye: `go install github.com/derailed/popeye@v0.22.1` fails here ("loading deprecation ...
# @v/list: 403 Forbidden": this proxy serves pinned versions but not version lists), so it is
# built through a throw-away module that requires the pinned version.
# v0.22.1 is the newest version the proxy serves (and the newest release in upstream's change_logs/).
# Polaris: no version can be fetched (see POLARIS_ERROR in bench/run.py); this script records the error.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BIN="${XDG_CACHE_HOME:-$HOME/.cache}/memory-hygiene/bench-bin"
POPEYE_VERSION=v0.22.1
mkdir -p "$BIN"

if [ ! -x "$HERE/.venv/bin/python" ]; then
  python3 -m venv "$HERE/.venv"
  "$HERE/.venv/bin/pip" install -q aiohttp orjson pyyaml matplotlib psutil py-spy
fi
# orjson: bench/floor.py --decode (the operator's decoder); added later than the venv may be.
"$HERE/.venv/bin/python" -c 'import orjson' 2>/dev/null || "$HERE/.venv/bin/pip" install -q orjson

if [ ! -x "$BIN/popeye" ]; then
  tmp=$(mktemp -d)
  cat > "$tmp/go.mod" <<MOD
module benchtools

go 1.23.0

require github.com/derailed/popeye $POPEYE_VERSION
MOD
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/derailed/popeye"\n' > "$tmp/tools.go"
  (cd "$tmp" && GOFLAGS=-mod=mod go mod tidy && go build -o "$BIN/popeye" github.com/derailed/popeye)
  rm -rf "$tmp"
fi
"$BIN/popeye" version || true

# etcd >= 3.5.13 for the control plane (Debian's 3.4.23 lacks RequestWatchProgress, which
# kube-apiserver needs to serve consistent LISTs from its watch cache and for WatchList /
# sendInitialEvents): the one devcluster/etcd/go.mod pins, built as the e2e suite builds it
# (into ~/.cache/memory-hygiene/bin/built/). `bench/run.py --etcd built` uses it.
python3 "$HERE/../devcluster/localcluster.py" build --with-built-etcd

if [ ! -x "$BIN/polaris" ]; then
  (cd "$(mktemp -d)" && go list -m -versions github.com/fairwindsops/polaris/v9 2>&1 | tail -2) || true
fi
