#!/usr/bin/env bash
# Rebuilds the NHS.UK frontend assets the web app serves (src/cef_web/static/nhsuk) from the
# lockfile beside this script. Needs Node.js and npm; `make up` does not: the result is committed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../src/cef_web/static/nhsuk"
cd "$here"
npm ci --no-audit --no-fund --ignore-scripts
dist="node_modules/nhsuk-frontend/dist/nhsuk"
version="$(node -p "require('./node_modules/nhsuk-frontend/package.json').version")"
rm -rf "$out"
mkdir -p "$out/images"
cp "$dist/nhsuk-frontend.min.css" "$dist/nhsuk-frontend.min.js" "$out/"
cp "$dist/assets/manifest.json" "$out/"
cp "$dist/assets/images/"* "$out/images/"
{
  echo "NHS.UK frontend $version (npm package nhsuk-frontend), https://github.com/nhsuk/nhsuk-frontend"
  echo
  echo "The files in this folder are copied unchanged from the package's dist/ folder by"
  echo "services/web/assets/build.sh (make assets)."
  echo
  sed -n '/^## Licence/,$p' node_modules/nhsuk-frontend/README.md
  echo
  echo "MIT Licence"
  echo
  echo "Copyright (c) NHS England"
  echo
  cat <<'MIT'
Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT
OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
MIT
} > "$out/LICENCE.txt"
echo "$version" > "$out/VERSION"
echo "NHS.UK frontend $version copied to $out"
