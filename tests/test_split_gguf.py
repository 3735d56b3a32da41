"""split_gguf: chunk packages joined in order, hash-checked, never imported; a missing
part or a wrong hash is a one-line error naming the file (exit 2 through the CLI)."""

import hashlib
import sys

import pytest

from checks import assert_one_line_error
from tpa_compress.errors import TPAError
from tpa_compress.load import default
from tpa_compress.load.split_gguf import SplitGGUF, assemble

CHUNKS = [b"GGUF" + bytes(range(200)), bytes(range(255, 0, -1)) * 3, b"tail"]


@pytest.fixture
def parts(tmp_path, monkeypatch):
    """Three installed fake chunk packages whose __init__ would leave a mark if imported."""
    site = tmp_path / "site"
    for i, data in enumerate(CHUNKS, 1):
        pkg = site / f"fakepart{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
        (pkg / "__init__.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').write('x')\n")
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(CHUNKS)
    spec = SplitGGUF("fake.gguf", "fakepart", "1.0", 3, hashlib.sha256(whole).hexdigest(), len(whole))
    return tmp_path, site, spec, whole


def test_joins_in_order_without_importing(parts):
    tmp, _, spec, whole = parts
    out = assemble(spec, tmp / "cache")
    assert out.read_bytes() == whole
    assert not (tmp / "imported").exists() and "fakepart1" not in sys.modules
    assert assemble(spec, tmp / "cache") == out  # reused: the stamp and size match


def test_missing_part_names_package_and_file(parts):
    tmp, site, spec, _ = parts
    (site / "fakepart2" / "data" / "part02.bin").unlink()
    with pytest.raises(TPAError, match="part02.bin.*fakepart2"):
        assemble(spec, tmp / "cache")
    (site / "fakepart2" / "data" / "part02.bin").write_bytes(CHUNKS[1])
    with pytest.raises(TPAError, match=r"fakepart4==1.0 \(part 4 of 4"):
        assemble(SplitGGUF("fake.gguf", "fakepart", "1.0", 4, spec.sha256, spec.size), tmp / "cache")


def test_hash_mismatch_keeps_no_file(parts):
    tmp, _, spec, _ = parts
    bad = SplitGGUF("fake.gguf", "fakepart", "1.0", 3, "0" * 64, spec.size)
    with pytest.raises(TPAError, match="fake.gguf.*expected 0000"):
        assemble(bad, tmp / "cache")
    assert list((tmp / "cache").iterdir()) == []


def test_cli_exit_2_on_a_mismatch(cli_run, parts, monkeypatch):
    tmp, _, spec, _ = parts
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp / "xdg"))
    monkeypatch.setitem(
        default.SPLIT_MODELS, "qwen2.5-coder-0.5b", SplitGGUF("fake.gguf", "fakepart", "1.0", 3, "1" * 64, spec.size)
    )
    code, _, err = cli_run("eval", "qwen2.5-coder-0.5b")
    assert_one_line_error(code, err, "fake.gguf", "expected 1111")
