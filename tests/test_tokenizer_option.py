"""`--tokenizer PATH` on every command that reads text, SentencePiece tokenizer.model
files, and the BOS each window starts with (tiny models, fast).

Bad input (a missing or unreadable tokenizer, one with more tokens than the model's
embedding rows, `--bos yes` with no BOS known) is a one-line error naming the file,
exit 2, before any work."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from checks import assert_one_line_error
from spm_fixture import train_tiny_sentencepiece
from tiny import char_tokenizer, random_state, tiny_config
from tpa_compress import cli
from tpa_compress.load import load_model
from tpa_compress.save import save_hf_folder

pytest.importorskip("sentencepiece")


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["tpa-compress", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        cli.main()
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


@pytest.fixture(scope="module")
def spm(tmp_path_factory):
    return train_tiny_sentencepiece(tmp_path_factory.mktemp("spm"))


def folder(root, family="llama", tokenizer=None, **over):
    """A tiny HF folder, with no tokenizer unless given."""
    cfg = tiny_config(family, **over)
    root.mkdir(parents=True)
    save_hf_folder(root, cfg, random_state(cfg, 1), tokenizer)
    return root


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    return folder(tmp_path_factory.mktemp("bare") / "m")


@pytest.fixture
def text(tmp_path):
    p = tmp_path / "text.txt"
    p.write_text("the quick brown fox jumps over the lazy dog. hello world. " * 20)
    return p


def command(name, model, tok, text, tmp):
    recipe = tmp / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "calibration": {"files": [str(text)], "tokens": 64, "seq_len": 16, "heldout_tokens": 0},
                "layers": [
                    {
                        "select": "all",
                        "k": {"method": "activation_svd", "rank": 4},
                        "v": {"method": "activation_svd", "rank": 4},
                    }
                ],
            }
        )
    )
    return {
        "eval": ["eval", model, "--data", text, "--seq-len", "16", "--max-windows", "1"],
        "analyze": [
            "analyze",
            model,
            "--data",
            text,
            "--seq-len",
            "16",
            "--calib-tokens",
            "32",
            "--out",
            tmp / "report",
        ],
        "generate": ["generate", model, "--prompt", "hello world", "--max-new-tokens", "2", "--device", "cpu"],
        "validate": ["validate", model, "--reference", model, "--data", text, "--seq-len", "16", "--max-windows", "1"],
        "convert": ["convert", model, "--recipe", recipe, "--out", tmp / "out"],
    }[name] + ["--tokenizer", tok]


COMMANDS = ["eval", "analyze", "generate", "validate", "convert"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_takes_a_tokenizer_model(name, bare, spm, text, tmp_path, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, *command(name, bare, spm, text, tmp_path))
    assert code in (0, None), err
    if name == "convert":  # the output carries the tokenizer.model, and reads text as the source did
        assert (tmp_path / "out" / "tokenizer.model").read_bytes() == spm.read_bytes()
        a = load_model(tmp_path / "out").tokenizer
        b = load_model(bare, tokenizer=spm).tokenizer
        assert type(a).__name__ == "SentencePieceTokenizer"
        assert a.encode("hello world") == b.encode("hello world") and a.bos_id == b.bos_id == 1


@pytest.mark.parametrize("name", COMMANDS)
def test_missing_tokenizer_fails_before_work(name, bare, text, tmp_path, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, *command(name, bare, tmp_path / "absent.model", text, tmp_path))
    assert_one_line_error(code, err, "--tokenizer", "absent.model", "no such file", "tokenizer.model", "tokenizer.json")
    assert "loaded" not in err and not (tmp_path / "out").exists() and not (tmp_path / "report").exists()


@pytest.mark.parametrize(
    "file, content, needles",
    [
        ("bad.model", b"not a protobuf at all", ["bad.model", "not a readable SentencePiece model"]),
        ("bad.json", b'{"model": 3}', ["bad.json", "not a valid tokenizers file"]),
        ("tok.txt", b"x", ["tok.txt", "unknown tokenizer file", "tokenizer.model"]),
    ],
)
def test_unreadable_tokenizer(file, content, needles, bare, text, tmp_path, monkeypatch, capsys):
    (tmp_path / file).write_bytes(content)
    code, out, err = run(monkeypatch, capsys, "eval", bare, "--data", text, "--tokenizer", tmp_path / file)
    assert_one_line_error(code, err, *needles)


def test_folder_without_tokenizer(bare, text, tmp_path, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "eval", bare, "--data", text, "--tokenizer", tmp_path)
    assert_one_line_error(code, err, str(tmp_path), "no tokenizer.json or tokenizer.model")


def test_tokenizer_larger_than_the_embedding(spm, text, tmp_path, monkeypatch, capsys):
    small = folder(tmp_path / "small", vocab_size=64)
    code, out, err = run(monkeypatch, capsys, "eval", small, "--data", text, "--tokenizer", spm)
    assert_one_line_error(code, err, f"--tokenizer {spm}", "90 tokens do not fit", "64 rows")
    (small / "tokenizer.model").write_bytes(spm.read_bytes())  # beside the model: the same check
    code, out, err = run(monkeypatch, capsys, "eval", small, "--data", text)
    assert_one_line_error(code, err, f"tokenizer of {small}", "90 tokens do not fit", "64 rows")


def test_tokens_added_past_the_embedding_are_not_counted(tmp_path):
    """Google's Gemma 3 1B tokenizer.json adds <image_soft_token> after its 262144 rows."""
    tok = char_tokenizer()
    m = folder(tmp_path / "m", vocab_size=tok.vocab_size)
    tok.tok.add_special_tokens(["<image_soft_token>"])
    tok.save(tmp_path / "t")
    assert load_model(m, tokenizer=tmp_path / "t").tokenizer.vocab_size == tok.vocab_size


def eval_doc(monkeypatch, capsys, tmp_path, *args):
    out = tmp_path / "e.json"
    code, table, err = run(monkeypatch, capsys, "eval", *args, "--seq-len", "16", "--max-windows", "1", "--json", out)
    assert code in (0, None), err
    return json.loads(out.read_text()), table


def test_gemma_takes_bos_from_its_config(tmp_path, text, monkeypatch, capsys):
    """A tokenizer.json that names no BOS (the hand-found case: Gemma scored 70 instead of 26.5)."""
    m = folder(tmp_path / "g", "gemma3")
    char_tokenizer().tok.save(str(tmp_path / "tokenizer.json"))  # bare: no post-processor, no config
    doc, table = eval_doc(monkeypatch, capsys, tmp_path, m, "--data", text, "--tokenizer", tmp_path / "tokenizer.json")
    assert doc["bos_id"] == 2 and doc["bos"] is True and "yes (id 2)" in table
    doc, table = eval_doc(
        monkeypatch, capsys, tmp_path, m, "--data", text, "--tokenizer", tmp_path / "tokenizer.json", "--bos", "no"
    )
    assert doc["bos_id"] is None and doc["bos"] is False


def test_gemma_config_bos_overrides_the_tokenizer_model(tmp_path, spm):
    """The SentencePiece file says <s> = 1; the Gemma config says 2: 2 is added."""
    m = folder(tmp_path / "g", "gemma3")
    tok = load_model(m, tokenizer=spm).tokenizer
    assert tok.bos_id == 2 and tok.encode("hello")[0] == 2


def test_bos_yes_borrows_the_config_id(bare, tmp_path, text, monkeypatch, capsys):
    """A non-Gemma model keeps its tokenizer's rule (this bare tokenizer.json adds none) ..."""
    char_tokenizer().tok.save(str(tmp_path / "tokenizer.json"))
    tok = tmp_path / "tokenizer.json"
    doc, table = eval_doc(monkeypatch, capsys, tmp_path, bare, "--data", text, "--tokenizer", tok)
    assert doc["bos_id"] is None and "yes" not in table.split("BOS")[-1].split("\n", 3)[2]
    # ... and --bos yes adds the config's BOS id, which the tokenizer does not name
    doc, table = eval_doc(monkeypatch, capsys, tmp_path, bare, "--data", text, "--tokenizer", tok, "--bos", "yes")
    assert doc["bos_id"] == 2 and "yes (id 2)" in table


def test_a_tokenizer_model_without_bos_borrows_the_config_id(bare, tmp_path):
    tok = load_model(bare, tokenizer=train_tiny_sentencepiece(tmp_path, bos_id=-1)).tokenizer
    assert (tok.bos_id, tok.add_bos) == (2, False)  # llama config: BOS 2; the file adds none


def test_bos_yes_with_no_bos_anywhere(tmp_path, text, monkeypatch, capsys):
    m = folder(tmp_path / "m", bos_token_id=None)
    tok = train_tiny_sentencepiece(tmp_path, bos_id=-1)
    code, out, err = run(
        monkeypatch, capsys, "eval", m, "--data", text, "--tokenizer", tok, "--bos", "yes", "--seq-len", "16"
    )
    assert_one_line_error(code, err, "--bos yes", str(m), "names a BOS token", "--bos no")
    doc, table = eval_doc(monkeypatch, capsys, tmp_path, m, "--data", text, "--tokenizer", tok)
    assert doc["bos_id"] is None and doc["bos"] is False


def test_sentencepiece_decode_and_save(spm, tmp_path):
    from tpa_compress.load.model_tokenizer import read_tokenizer

    tok = read_tokenizer(spm)
    ids = tok.encode("hello world")
    assert ids[0] == tok.bos_id == 1 and tok.decode(ids) == "hello world"
    assert tok.decode(ids, skip_special=False) == "<s>hello world"
    tok.add_bos = False
    tok.save(tmp_path / "saved")
    back = read_tokenizer(tmp_path / "saved")  # tokenizer_meta.json keeps the rule
    assert back.add_bos is False and back.encode("hello world") == ids[1:]


def test_transformers_reads_a_saved_gemma_tokenizer_model(tmp_path):
    """A Gemma model's tokenizer.model is saved with tokenizer_class GemmaTokenizer: transformers
    gives our ids, BOS (the config's) included."""
    transformers = pytest.importorskip("transformers")
    spm = train_tiny_sentencepiece(tmp_path, add_dummy_prefix=False)  # Gemma's normalizer adds no "▁"
    m = folder(tmp_path / "g", "gemma3")
    ours = load_model(m, tokenizer=spm).tokenizer
    ours.save(tmp_path / "out")
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    for text in ["hello world", "the lazy dog jumps 42 times"]:
        assert theirs(text).input_ids == ours.encode(text) and ours.encode(text)[0] == 2
