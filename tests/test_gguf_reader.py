"""Our GGUF reader (tpa_compress.load.gguf_reader) returns what gguf.GGUFReader returns:
every metadata value, every tensor's name / type / shape / offset / bytes; tiny files
written here, and (`real`) the embedded Gemma 3 270M."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from test_tokenizer import BYTES, write_tokenizer_gguf
from tiny import random_state, tiny_config, write_gguf
from tpa_compress.errors import TPAError
from tpa_compress.load import gguf as gguf_loader
from tpa_compress.load.gguf_reader import GGUFFile


def assert_same_as_gguf_reader(path: Path, ours: GGUFFile | None = None):
    """Compare everything; returns GGUFReader's view of the file."""
    import gguf

    ref = gguf.GGUFReader(str(path), "r")
    ours = ours or GGUFFile(path)
    assert list(ours.fields) == list(ref.fields)
    for key, f in ref.fields.items():
        got = ours.fields[key]
        assert int(got.type) == int(f.types[0]), key
        if got.item_type is not None:
            assert int(got.item_type) == int(f.types[-1]), key
        want = f.contents()
        assert type(got.contents()) is type(want), key
        assert got.contents() == want, key
    assert ours.alignment == ref.alignment and ours.data_offset == ref.data_offset
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    for a, b in zip(ours.tensors, ref.tensors, strict=True):
        assert a.tensor_type == b.tensor_type, a.name
        assert a.shape == tuple(int(x) for x in b.shape), a.name
        assert (a.n_elements, a.n_bytes, a.data_offset) == (b.n_elements, b.n_bytes, b.data_offset), a.name
        da = a.data
        assert da.dtype == b.data.dtype and da.shape == b.data.shape, a.name
        assert np.array_equal(da, b.data), a.name
    return ref


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_model_file_matches_gguf_reader(tmp_path, family):
    cfg = tiny_config(family)
    path = write_gguf(tmp_path / "m.gguf", cfg, random_state(cfg))
    assert_same_as_gguf_reader(path)


def test_tokenizer_file_matches_gguf_reader(tmp_path):
    tokens = ["<pad>", "<eos>", "<bos>", "  ", "héllo", "▁w", "", "✓"] + BYTES
    types = [3, 3, 3, 4, 1, 1, 1, 1] + [6] * 256
    path = write_tokenizer_gguf(
        tmp_path / "t.gguf",
        "gpt2",
        tokens,
        types,
        arch="llama",
        merges=["h é", "▁ w"],
        scores=[float(-i) for i in range(len(tokens))],
        pre="smollm",
    )
    assert_same_as_gguf_reader(path)


def test_quantised_and_f16_tensors(tmp_path):
    """Byte shapes of quantised tensors match GGUFReader's, and dequantise the same
    in row chunks as in one call."""
    import gguf

    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(tmp_path / "q.gguf"), "llama")
    w.add_uint32("general.alignment", 64)
    w.add_array("test.ints", [1, -2, 3])
    w.add_array("test.floats", [0.5, 1.5])
    w.add_bool("test.flag", False)
    w.add_float64("test.f64", 1e-300)
    q8 = rng.standard_normal((40, 64)).astype(np.float32)
    w.add_tensor(
        "q8", gguf.quants.quantize(q8, gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0
    )
    w.add_tensor("h", rng.standard_normal((3, 5)).astype(np.float16))
    w.add_tensor("v", rng.standard_normal(7).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    path = tmp_path / "q.gguf"
    assert_same_as_gguf_reader(path)

    ref = {t.name: t for t in gguf.GGUFReader(str(path), "r").tensors}
    ours = {t.name: t for t in GGUFFile(path).tensors}
    for name, shape in (("q8", (40, 64)), ("h", (3, 5)), ("v", (7,))):
        want = torch.from_numpy(
            np.array(gguf.quants.dequantize(ref[name].data, ref[name].tensor_type), dtype=np.float32)
        ).reshape(shape)
        got = gguf_loader.dequantize_tensor(ours[name])
        assert got.shape == shape and torch.equal(got, want), name
    old = gguf_loader._CHUNK_VALUES
    try:
        gguf_loader._CHUNK_VALUES = 3 * 64  # 3 rows per chunk: 14 chunks, the last partial
        assert torch.equal(gguf_loader.dequantize_tensor(ours["q8"]), gguf_loader.dequantize_tensor(ref["q8"]))
    finally:
        gguf_loader._CHUNK_VALUES = old
    assert np.abs(gguf_loader.dequantize_tensor(ours["q8"]).numpy() - q8).max() < 0.05


def test_bad_files_are_one_line_errors(tmp_path):
    cfg = tiny_config("gemma3")
    good = write_gguf(tmp_path / "m.gguf", cfg, random_state(cfg)).read_bytes()
    cases = {
        "magic": (b"GGML" + good[4:], "not a GGUF file"),
        "version": (good[:4] + (9).to_bytes(4, "little") + good[8:], "GGUF version 9"),
        "short": (good[:10], "too short"),
        "header": (good[:200], "truncated or corrupt GGUF header"),
        "data": (good[:-100], "runs past the end of the file"),
    }
    for name, (blob, msg) in cases.items():
        p = tmp_path / f"{name}.gguf"
        p.write_bytes(blob)
        with pytest.raises(TPAError) as e:
            GGUFFile(p)
        text = str(e.value)
        assert msg in text and str(p) in text and "\n" not in text, (name, text)


def test_missing_gguf_package_is_named(tmp_path, monkeypatch):
    """Without the `gguf` package (a broken install), loading says which package is
    missing instead of calling a good file unreadable."""
    import sys

    from tpa_compress.load import load_model

    cfg = tiny_config("gemma3")
    path = write_gguf(tmp_path / "m.gguf", cfg, random_state(cfg))
    for mod in [m for m in sys.modules if m == "gguf" or m.startswith("gguf.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` now fails
    with pytest.raises(TPAError) as e:
        load_model(path)
    text = str(e.value)
    assert str(path) in text and "'gguf'" in text and "not installed" in text and "\n" not in text, text


def test_loader_uses_it(tmp_path):
    """load_gguf goes through GGUFFile: weights equal the source state dict."""
    from tpa_compress.load import load_model

    cfg = tiny_config("llama")
    sd = random_state(cfg)
    ck = load_model(write_gguf(tmp_path / "m.gguf", cfg, sd))
    for n, t in sd.items():
        assert torch.equal(ck.weights.get(n), t), n


@pytest.mark.real
def test_real_gemma_matches_gguf_reader():
    import gguf

    from tpa_compress.load.default import gemma3_270m_path

    try:
        path = gemma3_270m_path()
    except TPAError as e:
        pytest.skip(str(e))
    t0 = time.perf_counter()
    ours = GGUFFile(path)
    t_ours = time.perf_counter() - t0
    assert len(ours.fields["tokenizer.ggml.tokens"]) == 262144
    # Every field and tensor info; tensor bytes for all tensors (they are mapped, not copied).
    ref = {t.name: t for t in assert_same_as_gguf_reader(path, ours).tensors}
    for t in ours.tensors:
        if t.name in ("token_embd.weight", "blk.5.attn_k.weight", "blk.5.attn_output.weight", "output_norm.weight"):
            want = np.array(gguf.quants.dequantize(ref[t.name].data, ref[t.name].tensor_type), dtype=np.float32)
            got = gguf_loader.dequantize_tensor(t).numpy()
            assert np.array_equal(got, want.reshape(got.shape)), t.name
    print(f"\nGGUFFile opened the 270M in {t_ours:.2f}s")
    assert t_ours < 5.0  # GGUFReader: 10-40 s on the CI machine


@pytest.mark.parametrize("model", ["llama", "gpt2"])
def test_tokenizer_builder_same_from_either_reader(tmp_path, model):
    import gguf

    from tpa_compress.load.tokenizer import tokenizer_from_gguf

    tokens = ["<pad>", "<eos>", "<bos>", "  ", "h", "e", "he", "▁", "▁he", "✓"] + BYTES
    types = [3, 3, 3, 4, 1, 1, 1, 1, 1, 1] + [6] * 256
    arch = "gemma3" if model == "llama" else "llama"
    path = write_tokenizer_gguf(
        tmp_path / "t.gguf", model, tokens, types, arch=arch, merges=["h e"] if model == "gpt2" else None
    )
    a = tokenizer_from_gguf(GGUFFile(path), str(path))
    b = tokenizer_from_gguf(gguf.GGUFReader(str(path), "r"), str(path))
    assert a.tok.to_str() == b.tok.to_str()
    assert (a.bos_id, a.eos_id, a.pad_id, a.add_bos) == (b.bos_id, b.eos_id, b.pad_id, b.add_bos)
    assert a.encode("he he ✓") == b.encode("he he ✓") and len(a.encode("he he ✓")) > 2
