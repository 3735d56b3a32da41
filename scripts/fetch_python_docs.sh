#!/usr/bin/env bash
# Fetch the Python 3.11 documentation sources (Debian package python3.11-doc, PSF
# license) and build the calibration/evaluation split:
#   data/calib.txt, data/eval.txt, data/manifest.json          (git-ignored, full split)
#   tpa_compress/data/calib_small.txt, eval_small.txt          (committed slices)
#   tpa_compress/data/README.md                                (stats block refreshed)
#
# Usage: bash scripts/fetch_python_docs.sh
# Env:   PYDOC_VERSION=3.11.2-6+deb12u9  pin the package version (default: apt's candidate)
#        SMALL_BYTES=300000              max size of each committed slice
#        PYTHON=python3                  interpreter (standard library only)
# Needs: apt-get and dpkg (Debian/Ubuntu with bookworm-era python3.11-doc available).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

pkg="python3.11-doc"
spec="$pkg${PYDOC_VERSION:+=$PYDOC_VERSION}"
small_bytes="${SMALL_BYTES:-300000}"
PYTHON="${PYTHON:-python3}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# apt's download sandbox user (_apt) must be able to write here, else apt warns.
chmod 0755 "$tmp"
mkdir "$tmp/dl"
chmod 0777 "$tmp/dl"

echo "downloading $spec ..."
if ! (cd "$tmp/dl" && apt-get download "$spec"); then
    if [[ "$(id -u)" == 0 ]]; then
        echo "apt-get download failed; running apt-get update and retrying" >&2
        apt-get update -qq
        (cd "$tmp/dl" && apt-get download "$spec")
    else
        echo "apt-get download $spec failed; try 'sudo apt-get update' first" >&2
        exit 1
    fi
fi

deb="$(ls "$tmp"/dl/${pkg}_*.deb)"
version="$(dpkg-deb -f "$deb" Version)"
deb_sha="$(sha256sum "$deb" | cut -d' ' -f1)"
echo "got $(basename "$deb") (version $version, sha256 $deb_sha)"

dpkg -x "$deb" "$tmp/x"
src="$tmp/x/usr/share/doc/python3.11/html/_sources"
if [[ ! -d "$src" ]]; then
    echo "$deb: no usr/share/doc/python3.11/html/_sources in the package" >&2
    exit 1
fi
echo "$(find "$src" -name '*.rst.txt' | wc -l) .rst.txt sources under usr/share/doc/python3.11/html/_sources"

"$PYTHON" scripts/build_corpus.py python-docs \
    --src "$src" --out data/ \
    --small-bytes "$small_bytes" --small-out tpa_compress/data \
    --package "$pkg" --version "$version" --deb-sha256 "$deb_sha"
