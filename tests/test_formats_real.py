"""The same Gemma 3 270M weights as a GGUF, a Hugging Face folder and a gemma_pytorch
model.ckpt give the same perplexity through `tpa-compress eval`, BOS included.

The ckpt is read as its users hold it, with a SentencePiece tokenizer.model beside it
(rebuilt from the GGUF's SentencePiece data: tests/spm_fixture.py); also with a bare
tokenizer.json beside it that names no BOS (a Gemma model takes its BOS from its
config: without it this scored perplexity 70 where the GGUF scores 26.5), and with the
tokenizer given by --tokenizer. All windows are short (1 x 128 tokens per domain) to
keep CI fast; the tokenizers are compared on the whole evaluation text.
"""

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from spm_fixture import sentencepiece_model_from_gguf
from tiny import write_ckpt
from tpa_compress import cli
from tpa_compress.data import eval_sets, read_texts
from tpa_compress.load import load_model
from tpa_compress.load.model_tokenizer import read_tokenizer

pytestmark = pytest.mark.real
pytest.importorskip("sentencepiece")
pytest.importorskip("google.protobuf")  # writing the test's tokenizer.model only

SEQ_LEN = 128
LONGEST_SPACE_PIECE = 31  # Gemma's whitespace pieces: 2..31 spaces, user-defined


@pytest.fixture(scope="module")
def gguf():
    try:
        return load_model("gemma3-270m")
    except Exception as e:  # model package not installed
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def files(gguf, tmp_path_factory):
    """name -> (model path, extra CLI args)."""
    from tpa_compress.save import save_hf_folder

    root = tmp_path_factory.mktemp("formats")
    # bf16 halves the writing; every eval runs in bf16, so the GGUF's weights round to these numbers
    sd = gguf.state_dict(torch.bfloat16)
    (root / "hf").mkdir()
    save_hf_folder(root / "hf", gguf.config, sd, gguf.tokenizer, dtype=torch.bfloat16)
    (root / "ckpt").mkdir()
    ckpt = write_ckpt(root / "ckpt" / "model.ckpt", gguf.config, sd)
    del sd
    spm = sentencepiece_model_from_gguf(Path(gguf.path), root / "ckpt" / "tokenizer.model")
    # the hand-found case: a tokenizer.json alone, no config files, no BOS anywhere in it
    bare = root / "ckpt_json"
    bare.mkdir()
    os.symlink(ckpt, bare / "model.ckpt")
    gguf.tokenizer.tok.save(str(bare / "tokenizer.json"))
    alone = root / "ckpt_alone"  # no tokenizer beside it: --tokenizer
    alone.mkdir()
    os.symlink(ckpt, alone / "model.ckpt")
    return {
        "gguf": gguf.path,
        "hf": root / "hf",
        "ckpt + tokenizer.model": ckpt,
        "ckpt + bare tokenizer.json": bare / "model.ckpt",
        "ckpt alone": alone / "model.ckpt",
        "spm": spm,
    }


def _segments(g, ids):
    """ids cut into single non-whitespace tokens and runs of whitespace-only tokens
    (pieces spelled from spaces, "▁", tabs and newlines), by the GGUF's vocabulary."""
    out, run = [], []
    for i in ids + [None]:
        if i is not None and not g.tok.id_to_token(i).strip(" \u2581\t\n\r"):
            run.append(i)
            continue
        if run:
            out.append(tuple(run))
            run = []
        if i is not None:
            out.append(i)
    return out


def test_sentencepiece_ids_equal_gguf_tokenizer(gguf, files):
    """On the bundled evaluation text the SentencePiece library's ids are the GGUF
    tokenizer's but for runs of more than 31 spaces: SentencePiece takes its longest
    user-defined whitespace piece first (37 spaces: 31 + 6), transformers' GGUF
    tokenizer, which ours reproduces, merges them as BPE (16 + 21)."""
    spm = read_tokenizer(files["spm"])
    g = gguf.tokenizer
    for name, paths in eval_sets(None).items():
        text = read_texts(paths)
        a, b = spm.encode(text, add_bos=False), g.encode(text, add_bos=False)
        assert spm.decode(a) == text == g.decode(b)
        sa, sb = _segments(g, a), _segments(g, b)
        assert len(sa) == len(sb), name
        differ = [(x, y) for x, y in zip(sa, sb) if x != y]
        for x, y in differ:  # only whitespace runs, the same text, longer than any whitespace piece
            assert isinstance(x, tuple) and isinstance(y, tuple), (name, x, y)
            assert g.decode(list(x)) == g.decode(list(y)) and len(g.decode(list(x))) > LONGEST_SPACE_PIECE
        print(
            f"{name}: {len(a)} SentencePiece tokens, {len(b)} GGUF tokens; {len(differ)} whitespace runs "
            f"({sorted({len(g.decode(list(x))) for x, _ in differ})} characters) tokenized differently"
        )
    assert spm.encode("Hello world", add_bos=False) == g.encode("Hello world", add_bos=False)


def eval_json(monkeypatch, capsys, out, *args):
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "tpa-compress",
            "eval",
            *map(str, args),
            "--seq-len",
            str(SEQ_LEN),
            "--max-windows",
            "2",
            "--device",
            "cpu",
            "--dtype",
            "bfloat16",
            "--json",
            str(out),
        ],
    )
    try:
        cli.main()
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr().err
    table = capsys.readouterr().out
    assert "yes (id 2)" in table  # the BOS column says what was done
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    """The first 3000 characters of each evaluation domain: 2 windows each, tokenized fast."""
    p = tmp_path_factory.mktemp("text") / "eval.txt"
    p.write_text("\n\n".join(read_texts(files)[:3000] for files in eval_sets(None).values()))
    return p


def test_same_perplexity_in_every_format(files, text, monkeypatch, capsys, tmp_path):
    docs = {
        name: eval_json(monkeypatch, capsys, tmp_path / f"{i}.json", files[name], "--data", text)
        for i, name in enumerate(["gguf", "hf", "ckpt + tokenizer.model", "ckpt + bare tokenizer.json"])
    }
    want = docs["gguf"]
    for name, got in docs.items():
        print(f"{name:28s} perplexity {got['perplexity']:.4f} ({got['windows']} x {SEQ_LEN} tokens)")
    for name, got in docs.items():
        assert got["bos_id"] == 2 and got["bos"] is True, name
        assert got["tokens"] == want["tokens"], name
        assert got["perplexity"] == pytest.approx(want["perplexity"], rel=1e-4), name


def test_tokenizer_option_on_a_bare_ckpt(files):
    """--tokenizer (its CLI plumbing: test_tokenizer_option.py): the ckpt alone takes the file's
    ids and its config's BOS."""
    ck = load_model(files["ckpt alone"], tokenizer=files["spm"])
    assert type(ck.tokenizer).__name__ == "SentencePieceTokenizer"
    assert ck.tokenizer.encode("Hello world") == [2, *read_tokenizer(files["spm"]).encode("Hello world", add_bos=False)]
