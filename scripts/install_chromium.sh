#!/usr/bin/env bash
# Installs Debian's chromium + chromium-driver for the browser test, when
# missing and when we can (root with apt). Never fails the install: the
# browser test skips with a reason when no browser is present.
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "install: installing chromium and chromium-driver (browser test)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "install: could not install chromium; the browser test will skip"
else
  echo "install: no chromium and no root apt; the browser test will skip"
fi
exit 0
