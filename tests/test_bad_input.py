"""Bad input: a one-line error naming the file and the problem, exit code 2, no traceback."""

import json
import sys

import pytest
import torch

from checks import assert_one_line_error
from tiny import random_state, tiny_config, write_gguf
from tpa_compress import cli
from tpa_compress.save import save_hf_folder


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "text.txt"
    p.write_text("hello world. " * 50)
    return p


def test_missing_model_file(cli_run, tmp_path, text_file):
    code, _, err = cli_run("eval", tmp_path / "nope.gguf", "--data", text_file)
    assert_one_line_error(code, err, "nope.gguf", "no such file")


def test_unknown_format(cli_run, tmp_path, text_file):
    p = tmp_path / "weights.bin"
    p.write_bytes(b"xx")
    code, _, err = cli_run("eval", p, "--data", text_file)
    assert_one_line_error(code, err, "weights.bin", "unknown model format", ".gguf")


def test_truncated_gguf(cli_run, tmp_path, text_file):
    cfg = tiny_config("llama")
    p = write_gguf(tmp_path / "m.gguf", cfg, random_state(cfg))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    code, _, err = cli_run("eval", p, "--data", text_file)
    assert_one_line_error(code, err, "m.gguf")


def test_unknown_architecture_in_gguf(cli_run, tmp_path, text_file):
    import gguf

    p = tmp_path / "odd.gguf"
    w = gguf.GGUFWriter(str(p), "mamba")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", torch.zeros(4, 4).numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    code, _, err = cli_run("eval", p, "--data", text_file)
    assert_one_line_error(code, err, "odd.gguf", "'mamba'", "gemma3, llama")


def test_corrupt_safetensors(cli_run, tmp_path, text_file):
    cfg = tiny_config("llama")
    save_hf_folder(tmp_path, cfg, random_state(cfg))
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 64)
    code, _, err = cli_run("eval", tmp_path, "--data", text_file)
    assert_one_line_error(code, err, "model.safetensors", "not a readable safetensors")


def test_shape_mismatch_between_config_and_tensors(cli_run, tmp_path, text_file):
    cfg = tiny_config("gemma3")
    save_hf_folder(tmp_path, cfg, random_state(cfg))
    c = json.loads((tmp_path / "config.json").read_text())
    c["intermediate_size"] = 64
    (tmp_path / "config.json").write_text(json.dumps(c))
    code, _, err = cli_run("eval", tmp_path, "--data", text_file)
    assert_one_line_error(code, err, "mlp.gate_proj.weight", "(48, 32)", "(64, 32)")


def test_unknown_architecture_in_config(cli_run, tmp_path, text_file):
    cfg = tiny_config("llama")
    save_hf_folder(tmp_path, cfg, random_state(cfg))
    c = json.loads((tmp_path / "config.json").read_text())
    c["model_type"] = "gpt_neox"
    (tmp_path / "config.json").write_text(json.dumps(c))
    code, _, err = cli_run("eval", tmp_path, "--data", text_file)
    assert_one_line_error(code, err, "config.json", "'gpt_neox'", "llama")


def test_corrupt_ckpt(cli_run, tmp_path, text_file):
    p = tmp_path / "model.ckpt"
    p.write_bytes(b"not a zip file at all")
    code, _, err = cli_run("eval", p, "--data", text_file)
    assert_one_line_error(code, err, "model.ckpt", "not a readable torch checkpoint")


def test_ckpt_without_state_dict(cli_run, tmp_path, text_file):
    p = tmp_path / "model.ckpt"
    torch.save({"weights": torch.zeros(2)}, str(p))
    code, _, err = cli_run("eval", p, "--data", text_file)
    assert_one_line_error(code, err, "model.ckpt", "model_state_dict")


def test_missing_data_file(cli_run, tmp_path):
    code, _, err = cli_run("eval", "--data", tmp_path / "absent.txt")
    assert_one_line_error(code, err, "absent.txt")


def test_bad_option_values(cli_run, text_file):
    code, _, err = cli_run("eval", "--data", text_file, "--seq-len", "1")
    assert_one_line_error(code, err, "--seq-len", "at least 2")
    code, _, err = cli_run("eval", "--data", text_file, "--bos", "maybe")
    assert_one_line_error(code, err, "--bos", "auto, yes, no")
    code, _, err = cli_run("eval", "--data", text_file, "--device", "tpu")
    assert_one_line_error(code, err, "--device", "cpu, cuda")


def test_text_too_short_for_one_window(tmp_path):
    from tpa_compress.errors import TPAError
    from tpa_compress.evaluate.perplexity import make_windows

    with pytest.raises(TPAError, match=r"short\.txt: 10 tokens is too short for one window of 2048"):
        make_windows(list(range(10)), 2048, 2, None, source=str(tmp_path / "short.txt"))


def test_debug_shows_traceback(monkeypatch, capsys, tmp_path, text_file):
    from tpa_compress.errors import TPAError

    monkeypatch.setattr(
        sys, "argv", ["tpa-compress", "--debug", "eval", str(tmp_path / "x.gguf"), "--data", str(text_file)]
    )
    with pytest.raises(TPAError):
        cli.main()


def test_variant_on_a_gguf_is_an_error(cli_run, tmp_path, text_file):
    from tiny import random_state, tiny_config, write_gguf

    cfg = tiny_config("gemma3")
    g = write_gguf(tmp_path / "m.gguf", cfg, random_state(cfg))
    code, _, err = cli_run("eval", str(g), "--variant", "1b", "--data", str(text_file))
    assert_one_line_error(code, err, "--variant 1b", "applies only to a gemma_pytorch .ckpt", "m.gguf")


@pytest.mark.parametrize(
    "edit, needles",
    [
        (
            lambda c: c["tpa"]["layers"][1]["k"].update(kind="banana"),
            ["config.json", "tpa.layers[1]", "unknown component kind 'banana'"],
        ),
        (
            lambda c: c["tpa"]["layers"][0]["v"].update(kind="latent", rank=1000),
            ["config.json", "tpa.layers[0]", "latent rank 1000 out of range"],
        ),
        (lambda c: c["tpa"]["layers"].pop(), ["config.json", "tpa.layers has 5 entries for 6 layers"]),
        (lambda c: c.update(layer_types=["full_attention"] * 3), ["config.json", "3 layer types for 6 layers"]),
    ],
)
def test_broken_converted_config_names_the_file_and_entry(cli_run, tmp_path, text_file, edit, needles):
    from tpa_compress.layout import layouts_to_config, original_layouts

    cfg = tiny_config("gemma3")
    save_hf_folder(tmp_path, cfg, random_state(cfg), extra_config={"tpa": layouts_to_config(original_layouts(cfg))})
    c = json.loads((tmp_path / "config.json").read_text())
    assert cfg.num_layers == 6
    edit(c)
    (tmp_path / "config.json").write_text(json.dumps(c))
    code, _, err = cli_run("eval", tmp_path, "--data", text_file)
    assert_one_line_error(code, err, *needles)
