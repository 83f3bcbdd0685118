#!/usr/bin/env bash
# Re-fetches the documentation assets that the server embeds (`include_bytes!` in
# server/src/http/docs.rs) from the official npm packages, at the pinned versions below.
#
# The files are committed so that building needs no network beyond crates.io and the pages
# work on an air-gapped network. Run this only to refresh or upgrade them: change a version
# AND its integrity (`npm view PACKAGE@VERSION dist.integrity`), run the script, look at the
# diff, run the browser test (`cargo test -p jobpath-tests docs`), commit.
#
# Why these packages:
# - swagger-ui-dist: the prebuilt Swagger UI bundle ("try it out").
# - redoc 2.x: its standalone bundle is a plain script with no telemetry; Redoc 3 reports
#   usage to its vendor by default, which an air-gapped or privacy-minded deployment must not.
set -euo pipefail

SWAGGER_UI_VERSION=5.35.0
SWAGGER_UI_INTEGRITY=sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ==
REDOC_VERSION=2.5.4
REDOC_INTEGRITY=sha512-M6jWhG1qoBnH6TFmzJnstyCZ87HmOY/UzDm78mHiYihEdlV/YcS9ogOo1NlElnJMeLsyxHFe2yFc4sNjHTrABQ==

here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# fetch PACKAGE VERSION INTEGRITY DEST FILE... : unpacks the package tarball, checks its
# integrity against the pinned value, and copies FILE... (paths inside the package) to DEST.
fetch() {
    local package=$1 version=$2 integrity=$3 dest=$4
    shift 4
    local tarball
    tarball="$(cd "$work" && npm pack --silent "$package@$version")"
    local actual
    actual="sha512-$(openssl dgst -sha512 -binary "$work/$tarball" | base64 -w0)"
    if [ "$actual" != "$integrity" ]; then
        echo "error: $package@$version has integrity $actual, pinned $integrity" >&2
        exit 1
    fi
    mkdir -p "$work/$package" "$dest"
    tar -xzf "$work/$tarball" -C "$work/$package"
    rm -f "$dest"/*
    for file in "$@"; do
        cp "$work/$package/package/$file" "$dest/"
    done
    echo "$version" >"$dest/VERSION"
    echo "$package@$version -> ${dest#"$here"/}: $*"
}

fetch swagger-ui-dist "$SWAGGER_UI_VERSION" "$SWAGGER_UI_INTEGRITY" "$here/swagger-ui" \
    swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css LICENSE NOTICE
fetch redoc "$REDOC_VERSION" "$REDOC_INTEGRITY" "$here/redoc" \
    bundles/redoc.standalone.js bundles/redoc.standalone.js.LICENSE.txt LICENSE
