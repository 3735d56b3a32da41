"""`tpa-compress generate` on a tiny HF folder (CPU; with pytest --device cuda also the
CUDA-graph path), and its bad-input errors."""

import re

import pytest
import torch

from checks import assert_one_line_error
from tiny import char_tokenizer, random_state, tiny_config
from tpa_compress.save import save_hf_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    cfg = tiny_config("gemma3", vocab_size=40, max_position_embeddings=64)
    path = tmp_path_factory.mktemp("gen") / "m"
    path.mkdir()
    save_hf_folder(path, cfg, random_state(cfg, 1), char_tokenizer())
    return path


@pytest.mark.each_device
def test_streams_and_summarises(cli_run, recwarn, folder, device):
    code, out, err = cli_run("generate", folder, "--prompt", "the cat sat", "--device", device, "--max-new-tokens", "6")
    assert code in (0, None), err
    assert out.startswith("the cat sat")
    peak = "peak GPU" if device == "cuda" else "peak RSS"
    assert "prefill 12 tok" in err and "decode 1x" in err and "KV " in err and peak in err
    # where the time went, and no framework notice (inductor's TensorFloat32 one on a GPU)
    assert re.search(
        r"load [\d.]+s build [\d.]+s capture [\d.]+s prefill [\d.]+s decode [\d.]+s", " ".join(err.split())
    )
    assert not [w for w in recwarn if "TensorFloat32" in str(w.message)]


@pytest.mark.each_device
def test_prompt_file_runs_as_one_batch(cli_run, folder, tmp_path, device):
    f = tmp_path / "p.txt"
    f.write_text("a dog\n\nthe long walk home\n")
    args = ["--max-new-tokens", "5", "--temperature", "0.8", "--top-p", "0.9", "--seed", "3"]
    code, out, err = cli_run("generate", folder, "--prompt-file", f, "--device", device, *args)
    assert code in (0, None), err
    assert "--- [0] ---" in out and "--- [1] ---" in out and "a dog" in out and "the long walk home" in out
    assert "decode 2x" in err
    # a fixed seed gives the same completions (the CUDA warm-up draws from the same seed each run)
    code, again, err = cli_run("generate", folder, "--prompt-file", f, "--device", device, *args)
    assert code in (0, None), err
    assert again == out


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--prompt", "hi", "--device", "tpu"], ["--device 'tpu'", "valid: auto, cpu, cuda"]),
        (["--prompt", "hi", "--temperature", "-1"], ["--temperature -1.0", "valid"]),
        (["--prompt", "hi", "--top-p", "1.5"], ["--top-p 1.5", "0 < p <= 1"]),
        (["--prompt", "hi", "--top-k", "-3"], ["--top-k -3"]),
        (["--prompt", "hi", "--max-new-tokens", "0"], ["--max-new-tokens 0", "at least 1"]),
        ([], ["exactly one of --prompt"]),
    ],
)
def test_bad_arguments(cli_run, folder, args, needles):
    code, _, err = cli_run("generate", folder, *args)
    assert_one_line_error(code, err, *needles)


def test_empty_prompt_file(cli_run, folder, tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("\n  \n")
    code, _, err = cli_run("generate", folder, "--prompt-file", f)
    assert_one_line_error(code, err, "empty.txt", "no prompts")


def test_prompt_file_not_text(cli_run, folder, tmp_path):
    f = tmp_path / "prompts.bin"
    f.write_bytes(b"fine\n\xd0\x00\xff\n")
    code, _, err = cli_run("generate", folder, "--prompt-file", f)
    assert_one_line_error(code, err, "prompts.bin", "not UTF-8", "byte 5")
    code, _, err = cli_run("generate", folder, "--prompt-file", tmp_path)
    assert_one_line_error(code, err, str(tmp_path), "not a regular file")


def test_prompt_longer_than_max_length(cli_run, folder):
    code, _, err = cli_run("generate", folder, "--prompt", "word " * 20, "--device", "cpu", "--max-new-tokens", "8")
    # the model loads first (its tokenizer counts the tokens): drop the "loaded" note
    err = "\n".join(ln for ln in err.splitlines() if not ln.startswith("loaded "))
    assert_one_line_error(code, err, "prompt of 101 tokens", "+ --max-new-tokens 8", "supports at most 64")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_but_absent(cli_run, folder):
    code, _, err = cli_run("generate", folder, "--prompt", "hi", "--device", "cuda")
    assert_one_line_error(code, err, "--device cuda", "no CUDA device")


def converted_folder(root, cache_dtype):
    """A tiny Gemma 3 HF folder converted to latent K/V with `cache_dtype` recorded."""
    from tpa_compress.convert import convert, write_output
    from tpa_compress.load import load_model
    from tpa_compress.models import build_model
    from tpa_compress.recipe import parse_recipe

    cfg = tiny_config("gemma3", vocab_size=40, max_position_embeddings=64)
    orig = root / "orig"
    if not orig.exists():
        orig.mkdir()
        save_hf_folder(orig, cfg, random_state(cfg, 1), char_tokenizer())
    rec = parse_recipe(
        {
            "cache_dtype": cache_dtype,
            "calibration": {"tokens": 256, "seq_len": 32, "heldout_tokens": 0},
            "layers": [
                {
                    "select": "all",
                    "k": {"method": "activation_svd", "rank": 8},
                    "v": {"method": "activation_svd", "rank": 8},
                }
            ],
        },
        "t.yaml",
    )
    ck = load_model(orig)
    res, tensors = convert(ck, build_model(ck), rec, eval_model=False, log=lambda m: None)
    write_output(root / cache_dtype, ck, rec, res, tensors, force=False)
    return root / cache_dtype


def test_cache_dtype_recorded_by_convert_is_used(cli_run, tmp_path):
    from dataclasses import replace

    from tpa_compress.layout import cache_bytes, layouts_from_config
    from tpa_compress.load import load_model

    path = converted_folder(tmp_path, "fp16")
    code, out, err = cli_run("generate", path, "--prompt", "the cat", "--device", "cpu", "--max-new-tokens", "5")
    assert code in (0, None), err
    tpa = load_model(path).extra["tpa"]
    assert tpa["cache_dtype"] == "fp16"
    layouts = [replace(lay, cache_dtype="fp16") for lay in layouts_from_config(tpa)]
    want = cache_bytes(layouts, 8 + 5, 1) / 2**20  # "the cat" = 7 chars + BOS
    assert f"KV {want:.2f} MiB fp16 allocated" in " ".join(err.split())
    # an explicit --cache-dtype wins over the recorded one
    code, out, err = cli_run(
        "generate", path, "--prompt", "the cat", "--device", "cpu", "--max-new-tokens", "5", "--cache-dtype", "fp32"
    )
    assert code in (0, None), err
    assert f"KV {2 * want:.2f} MiB fp32 allocated" in " ".join(err.split())


@pytest.mark.parametrize("name", ["fp8", "int8"])
def test_one_byte_cache_dtype_recorded_by_convert(cli_run, tmp_path, name):
    from dataclasses import replace

    from tpa_compress.layout import cache_bytes, layouts_from_config
    from tpa_compress.load import load_model

    path = converted_folder(tmp_path, name)
    code, out, err = cli_run("generate", path, "--prompt", "the cat", "--device", "cpu", "--max-new-tokens", "5")
    assert code in (0, None), err
    layouts = [replace(lay, cache_dtype=name) for lay in layouts_from_config(load_model(path).extra["tpa"])]
    want = cache_bytes(layouts, 8 + 5, 1) / 2**20
    assert f"KV {want:.2f} MiB {name} allocated" in " ".join(err.split())


def test_bad_cache_dtypes(cli_run, tmp_path):
    import json

    path = converted_folder(tmp_path, "bf16")
    code, _, err = cli_run("generate", path, "--prompt", "hi", "--cache-dtype", "int5")
    assert_one_line_error(code, err, "--cache-dtype 'int5'", "valid: auto, fp32, bf16, fp16, fp8, int8, int4")
    cfg = json.loads((path / "config.json").read_text())
    cfg["tpa"]["cache_dtype"] = "int5"
    (path / "config.json").write_text(json.dumps(cfg))
    code, _, err = cli_run("generate", path, "--prompt", "hi", "--device", "cpu")
    assert_one_line_error(code, err, "config.json", "tpa.cache_dtype 'int5'", "valid: fp32")


def test_grouped_cache_recorded_by_convert(cli_run, tmp_path):
    """A recipe's int4 cache: config.json records it per layer, generate stores it (CPU,
    bytes = the prediction) and eval scores through it (the simulated reads) by default."""
    import json
    from dataclasses import replace

    from tpa_compress.layout import cache_bytes, layouts_from_config
    from tpa_compress.load import load_model

    name = "int4:group=4,recent=2"
    path = converted_folder(tmp_path, name)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["tpa"]["cache_dtype"] == name
    assert cfg["tpa"]["layers"][0]["cache_dtype"] == "int4"
    assert cfg["tpa"]["layers"][0]["cache"] == {"group": 4, "recent": 2, "rotate": "none", "values": "auto", "sink": 1}
    code, out, err = cli_run("generate", path, "--prompt", "the cat", "--device", "cpu", "--max-new-tokens", "9")
    assert code in (0, None), err
    layouts = [replace(lay, cache_dtype=name) for lay in layouts_from_config(load_model(path).extra["tpa"])]
    want = cache_bytes(layouts, 8 + 9, 1) / 2**20
    assert f"KV {want:.2f} MiB {name} allocated (layout predicts {want:.2f})" in " ".join(err.split())
    code, out, err = cli_run("eval", path, "--seq-len", "16", "--max-windows", "2")
    assert code in (0, None), err
    assert f"through a {name} KV cache" in " ".join(out.split())
