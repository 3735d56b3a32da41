# Imported before any test module: tpa_compress sets OMP_WAIT_POLICY=PASSIVE, which only
# works if it happens before torch is first imported (see tpa_compress/__init__.py).
import tpa_compress  # noqa: F401
