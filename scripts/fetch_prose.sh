#!/usr/bin/env bash
# Fetch The Debian Administrator's Handbook (Debian package debian-handbook, GPL-2.0+ or
# CC-BY-SA-3.0) and build the second bundled domain, English prose:
#   data/prose/prose_calib.txt, prose_eval.txt, manifest.json   (git-ignored, full split)
#   tpa_compress/data/prose_calib_small.txt, prose_eval_small.txt (committed slices)
#   tpa_compress/data/README.md                                  (prose stats block refreshed)
#
# Usage: bash scripts/fetch_prose.sh
# Env:   PROSE_VERSION=11.20220922  package version (pinned; the .deb's sha256 is checked
#                                   when it is the pinned one)
#        SMALL_BYTES=340000         max size of each committed slice
#        PYTHON=python3             interpreter (standard library only)
# Needs: apt-get and dpkg (Debian 12 "bookworm" ships debian-handbook 11.20220922).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

pkg="debian-handbook"
pinned_version="11.20220922"
pinned_sha256="3d5dbeac1f1afc9c094eab9d0f701f6ecff99c4927d5a4794cf6c85678134faa"
version="${PROSE_VERSION:-$pinned_version}"
small_bytes="${SMALL_BYTES:-340000}"
PYTHON="${PYTHON:-python3}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# apt's download sandbox user (_apt) must be able to write here, else apt warns.
chmod 0755 "$tmp"
mkdir "$tmp/dl"
chmod 0777 "$tmp/dl"

echo "downloading $pkg=$version ..."
if ! (cd "$tmp/dl" && apt-get download "$pkg=$version"); then
    if [[ "$(id -u)" == 0 ]]; then
        echo "apt-get download failed; running apt-get update and retrying" >&2
        apt-get update -qq
        (cd "$tmp/dl" && apt-get download "$pkg=$version")
    else
        echo "apt-get download $pkg=$version failed; try 'sudo apt-get update' first" >&2
        exit 1
    fi
fi

deb="$(ls "$tmp"/dl/${pkg}_*.deb)"
deb_sha="$(sha256sum "$deb" | cut -d' ' -f1)"
echo "got $(basename "$deb") (sha256 $deb_sha)"
if [[ "$version" == "$pinned_version" && "$deb_sha" != "$pinned_sha256" ]]; then
    echo "$(basename "$deb"): sha256 $deb_sha, expected $pinned_sha256 for version $pinned_version" >&2
    exit 1
fi

dpkg -x "$deb" "$tmp/x"
src="$tmp/x/usr/share/doc/debian-handbook/html/en-US"
if [[ ! -d "$src" ]]; then
    echo "$deb: no usr/share/doc/debian-handbook/html/en-US in the package" >&2
    exit 1
fi
echo "$(ls "$src"/*.html | wc -l) .html pages under usr/share/doc/debian-handbook/html/en-US"

"$PYTHON" scripts/build_corpus.py prose \
    --src "$src" --out data/prose/ \
    --small-bytes "$small_bytes" --small-out tpa_compress/data \
    --package "$pkg" --version "$version" --deb-sha256 "$deb_sha"
