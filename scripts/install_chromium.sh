#!/usr/bin/env bash
# The browser that tests/stages/test_serve.py drives (through playwright): Debian's Chromium, installed with apt-get
# when it is missing and this is root on a machine with apt-get. Anywhere else it says why in one line and
# succeeds anyway: the browser test then skips with its reason, and the rest of the suite runs as usual.
#
#   bash scripts/install_chromium.sh      (part of the README's test command, which CI runs)
set -u
for browser in "${SERVE_TEST_CHROMIUM:-}" chromium chromium-browser; do
  if [ -n "$browser" ] && command -v "$browser" >/dev/null 2>&1; then
    exit 0
  fi
done
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: no Chromium, and apt-get cannot install it here (needs root on Debian); the browser test of quantart serve will be skipped." >&2
  exit 0
fi
log="$(mktemp)"
if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >"$log" 2>&1; then
  rm -f "$log"
  exit 0
fi
echo "note: apt-get could not install Chromium (last lines below); the browser test of quantart serve will be skipped." >&2
tail -n 3 "$log" >&2
rm -f "$log"
exit 0
