#!/usr/bin/env bash
# The web chat in a real (headless) browser, and the Autobahn WebSocket
# conformance cases against the transport. Called by .ci/run; runnable alone.
# Also the JavaScript client's node tests (clients/js/test).
# Installs what it needs: Debian's chromium, playwright-core (npm, pinned in
# tests/browser/package-lock.json), kosoku (PyPI, pinned below) in a venv.
set -euo pipefail
cd "$(dirname "$0")/.."

KOSOKU_VERSION=0.1.0
# Binaries live in cargo's target directory, wherever CARGO_TARGET_DIR puts it.
bin="${CARGO_TARGET_DIR:-target}/debug/examples"
out=target/ci-web
mkdir -p "$out"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

# Starts a harness on 127.0.0.1:0 (in this shell, so cleanup knows its pid)
# and sets ECHO_URL to the ws:// URL it reports.
start_echo() {
  local log=$1
  shift
  "$bin/autobahn_echo" --addr 127.0.0.1:0 "$@" >"$log" 2>&1 &
  pids+=($!)
  ECHO_URL=""
  for _ in $(seq 1 100); do
    ECHO_URL=$(grep -o 'ws://[0-9.:]*' "$log" 2>/dev/null || true)
    if [ -n "$ECHO_URL" ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "echo harness did not start:" >&2
  cat "$log" >&2
  return 1
}

echo "== autobahn: echo harness and kosoku $KOSOKU_VERSION"
cargo build -p im-transport-ws --example autobahn_echo
if [ ! -x target/autobahn-venv/bin/python ]; then
  python3 -m venv target/autobahn-venv
fi
target/autobahn-venv/bin/pip install --quiet --disable-pip-version-check "kosoku==$KOSOKU_VERSION"
py=target/autobahn-venv/bin/python

# 1. Everything but the performance/limits section (9.x) and compression
#    (12.x, 13.x: permessage-deflate is not offered), at the transport's
#    default chat limits (256 KiB messages).
start_echo "$out/echo-chat.log"
"$py" tests/autobahn/run.py "$ECHO_URL" chat-limits --out "$out/autobahn" \
  --exclude '9.*' '12.*' '13.*'
# 2. Section 9 sends messages up to 16 MiB: same harness, limits raised.
start_echo "$out/echo-limits.log" --max-message-bytes 20000000
"$py" tests/autobahn/run.py "$ECHO_URL" large-messages --out "$out/autobahn" --cases '9.*'
cleanup
pids=()

echo "== browser: web-chat in headless chromium"
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
cargo build --example web-chat
(
  cd tests/browser
  npm ci --no-audit --no-fund --loglevel=error
  WEB_CHAT_BIN="$(cd ../.. && cd "$(dirname "$bin")" && pwd)/examples/web-chat" \
    SCREENSHOT_DIR="$PWD/../../$out" node --test chat.test.mjs
)
echo "screenshots: $out/web-chat-*.png"

echo "== js client (clients/js): unit tests, then against a real web-chat"
# No packages: Node's own test runner and WebSocket (behind a flag in Node 20).
# Each test has its own deadline; the whole run is bounded here too.
WEB_CHAT_BIN="$(cd "$(dirname "$bin")" && pwd)/examples/web-chat" \
  timeout 300 node --experimental-websocket --test \
  clients/js/test/im-sync.test.mjs clients/js/test/im-timeline.test.mjs \
  clients/js/test/im-typing.test.mjs clients/js/test/im-presence.test.mjs \
  clients/js/test/im-system.test.mjs clients/js/test/im-frames.test.mjs \
  clients/js/test/im-client.test.mjs
