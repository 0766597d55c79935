#!/usr/bin/env bash
# Debian packages the project runs as programs: espeak-ng (phoneme front end, synthetic corpus), flite
# (synthetic corpus), and chromium + chromium-driver (the headless browser that tests the server's web page).
# Installs what is missing when it can (root + apt-get); otherwise says what to install.
set -euo pipefail
missing=()
for tool in espeak-ng flite chromium; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
command -v chromedriver >/dev/null || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q "${missing[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
    echo "installed ${missing[*]}"
else
    echo "warning: ${missing[*]} not installed and cannot be installed here: run 'apt-get install -y ${missing[*]}'" \
        "(the phoneme tests, the corpus recipe and the web page's browser test need them)" >&2
fi
