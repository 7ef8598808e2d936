#!/usr/bin/env bash
# Chromium and ChromeDriver, from Debian's packages, for the report's browser tests (Testing/test_report.py):
# the page rendered, its images decoded, no console error, a screenshot, a PDF. Installed only where
# missing, and only as root with apt-get; anywhere else those tests are skipped and this says why.
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            chromium chromium-driver fonts-dejavu-core) >/dev/null 2>&1; then
        echo "install-browser: apt-get could not install chromium: the browser tests will be skipped" >&2
    fi
else
    echo "install-browser: Chromium is missing and needs root and apt-get to install: the browser tests will be skipped" >&2
fi
exit 0
