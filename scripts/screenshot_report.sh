#!/usr/bin/env bash
# Screenshot an HTML report with headless Chromium: scripts/screenshot_report.sh REPORT.html OUT.png [WIDTH,HEIGHT]
# Checks that the single-file report renders in a real browser (no network, throw-away profile).
set -euo pipefail
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 REPORT.html OUT.png [WIDTH,HEIGHT]" >&2
  exit 2
fi
report=$(realpath "$1")
out=$(realpath -m "$2")
size=${3:-1280,2400}
[ -f "$report" ] || { echo "$1: no such file" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "chromium is not installed (Debian: apt-get install -y chromium)" >&2; exit 3; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
rm -f "$out"
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync --hide-scrollbars \
  --user-data-dir="$profile" --screenshot="$out" --window-size="$size" "file://$report" >/dev/null 2>&1 || true
[ -s "$out" ] || { echo "$1: chromium wrote no screenshot" >&2; exit 1; }
echo "$out"
