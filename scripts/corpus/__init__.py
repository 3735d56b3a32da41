"""The corpus builder: the bundled calibration/evaluation text of tpa_compress/data.

Tooling, not part of the installed package: nothing reads it at run time. One file per
domain (how to select and read its pages), ``common.py`` for the steps they share. A new
domain is one file defining a ``Domain`` and an entry in ``DOMAINS``.
"""

from . import prose, python_docs

DOMAINS = {d.name: d for d in (python_docs.DOMAIN, prose.DOMAIN)}
