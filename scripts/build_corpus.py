"""Build one domain's calibration/evaluation split (see scripts/corpus/).

    python3 scripts/build_corpus.py {python-docs,prose} --src DIR [--out DIR]
        [--small-bytes N] [--small-out DIR] [--package P --version V --deb-sha256 HEX]

Normally run by scripts/fetch_python_docs.sh and scripts/fetch_prose.sh, which download
the pinned Debian package first. Standard library only.
"""

import sys

from corpus import DOMAINS
from corpus.common import main

if __name__ == "__main__":
    sys.exit(main(DOMAINS, sys.argv[1:]))
