"""`tpa-compress generate`: stream text from a model (original or converted) with the cached runner."""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Optional

import typer

from ..errors import TPAError


def read_prompts(prompt: Optional[str], prompt_file: Optional[Path]) -> list[str]:
    if (prompt is None) == (prompt_file is None):
        raise TPAError("give exactly one of --prompt TEXT or --prompt-file FILE")
    if prompt is not None:
        if not prompt.strip():
            raise TPAError("--prompt is empty; give some text")
        return [prompt]
    if not prompt_file.exists():
        raise TPAError(f"--prompt-file {prompt_file}: no such file")
    if not prompt_file.is_file():
        raise TPAError(f"--prompt-file {prompt_file} is not a regular file; give a text file, one prompt per line")
    try:
        text = prompt_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TPAError(
            f"--prompt-file {prompt_file} is not UTF-8 text (byte {e.start}); "
            f"give a UTF-8 text file, one prompt per line"
        ) from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise TPAError(f"--prompt-file {prompt_file} has no prompts; put one prompt per line")
    return lines


def recorded_cache_dtype(model: Optional[str]) -> Optional[str]:
    """The KV cache dtype a converted HF folder records (config.json `tpa.cache_dtype`),
    read without loading the model; None for anything else."""
    import json

    from ..cache_formats import parse_spec

    cfg = Path(model) / "config.json" if model else None
    if cfg is None or not cfg.is_file():
        return None
    try:
        recorded = (json.loads(cfg.read_text()).get("tpa") or {}).get("cache_dtype")
    except (ValueError, AttributeError):
        return None  # the loader reports a broken config.json properly
    if recorded is not None:
        parse_spec(recorded, f"{cfg}: tpa.cache_dtype")
    return recorded


def summary(res, batch: int, cache_dtype: str, load_s: float, build_s: float, capture_s: float) -> str:
    """generate's last line: speeds, KV bytes (and the layout's prediction), peak memory, and
    where the time went."""
    gpu = res.peak_memory is not None
    peak = res.peak_memory if gpu else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return (
        f"prefill {res.prompt_tokens} tok in {res.prefill_s:.3f}s ({res.prefill_tok_s:,.0f} tok/s) | "
        f"decode {batch}x{res.decode_steps} tok in {res.decode_s:.3f}s ({res.decode_tok_s:,.0f} tok/s) | "
        f"KV {res.kv_bytes / 2**20:.2f} MiB {cache_dtype} allocated "
        f"(layout predicts {res.predicted_kv_bytes / 2**20:.2f}) | peak {'GPU' if gpu else 'RSS'} "
        f"{peak / 2**20:.0f} MiB | load {load_s:.2f}s build {build_s:.2f}s capture {capture_s:.2f}s "
        f"prefill {res.prefill_s:.2f}s decode {res.decode_s:.2f}s"
    )


def generate_cmd(
    model: Optional[str] = typer.Argument(
        None,
        help="Model path (.gguf, HF folder incl. converted "
        "ones, .ckpt) or an embedded name: gemma3-270m (default), smollm2-135m, qwen2.5-coder-0.5b, "
        "qwen2.5-coder-1.5b (make install-qwen-1.5b).",
    ),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="The prompt text."),
    prompt_file: Optional[Path] = typer.Option(
        None, "--prompt-file", help="One prompt per line; all run as one batch."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Tokens to generate per prompt."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass, 0 < p <= 1."),
    top_k: int = typer.Option(0, "--top-k", help="Keep the k most likely tokens; 0 = off."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    dtype: str = typer.Option(
        "auto", "--dtype", help="Weights dtype: auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16."
    ),
    cache_dtype: str = typer.Option(
        "auto",
        "--cache-dtype",
        help="KV cache dtype: auto (what a "
        "converted folder records, else bf16 on CUDA and the weights' dtype "
        "on CPU), fp32, bf16, fp16, fp8 (e4m3), int8 (per-token scales), int4, int3, int2 "
        "(grouped, KIVI-style; parameters as int4:group=32,recent=128,rotate=hadamard).",
    ),
    variant: Optional[str] = typer.Option(None, "--variant", help="gemma_pytorch .ckpt variant."),
    tokenizer: Optional[Path] = typer.Option(
        None,
        "--tokenizer",
        help="Tokenizer instead of the one "
        "found with the model: a tokenizer.model (SentencePiece), a "
        "tokenizer.json, or a folder holding one.",
    ),
):
    """Generate text with the static factorized KV cache (CUDA graph decode on GPU).

    Streams the text of a single prompt as it is generated; a batch (--prompt-file)
    prints each completion when done. Ends with prefill / decode speed, the KV bytes
    allocated (and analyze's prediction), peak memory, and where the time went: load,
    build (kernels), capture (compile + CUDA graph + a warm-up prefill), prefill, decode."""
    import torch

    from ..cli_common import make_console, open_model, require_tokenizer, resolve_device, torch_dtype
    from . import SamplingParams
    from .cache import check_cache_dtype

    console, stdout = make_console(stderr=True), make_console(highlight=False)
    if max_new_tokens < 1:
        raise TPAError(f"--max-new-tokens {max_new_tokens} is not valid; it must be at least 1")
    check_cache_dtype(cache_dtype, also=("auto",))
    params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k)
    texts = read_prompts(prompt, prompt_file)
    dev = resolve_device(device)
    dtype = weights_dtype(dtype, dev)
    torch_dtype(dtype)
    if cache_dtype == "auto":  # before loading: a broken recording fails at once
        cache_dtype = recorded_cache_dtype(model) or "auto"
    (ckpt, net), t_load = timed(open_model, model, variant, dtype, dev, tokenizer)
    tok = require_tokenizer(ckpt)
    ids = encode_prompts(ckpt, tok, texts, max_new_tokens)
    torch.manual_seed(seed)
    # the decode plan's kernels are built here (NVRTC, from the disk cache once built)
    runner, t_build = timed(build_runner, net, ids, max_new_tokens, cache_dtype)
    _, t_capture = timed(capture, runner, ids, params, dev, console)
    if len(ids) == 1:
        res = stream_one(runner, tok, texts[0], ids, max_new_tokens, params, stdout)
    else:
        res = generate_batch(runner, tok, texts, ids, max_new_tokens, params, stdout)
    console.print(
        summary(res, len(ids), runner.layouts[0].cache_dtype, t_load, t_build, t_capture),
        highlight=False,
        soft_wrap=True,
    )


def timed(fn, *args):
    """(fn(*args), its wall time in seconds)."""
    t = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t


def weights_dtype(dtype: str, dev: str) -> str:
    """--dtype with auto resolved: bf16 on CUDA, fp32 on CPU."""
    if dtype == "auto":
        return "bfloat16" if dev.startswith("cuda") else "float32"
    return dtype


def encode_prompts(ckpt, tok, texts: list[str], max_new_tokens: int) -> list[list[int]]:
    """Each prompt's ids, after checking the longest plus the new tokens fits the model's context."""
    ids = [tok.encode(t) for t in texts]
    longest = max(len(i) for i in ids)
    ckpt.config.check_length(
        longest + max_new_tokens, f"a prompt of {longest} tokens + --max-new-tokens {max_new_tokens}", ckpt.path
    )
    return ids


def build_runner(net, ids: list[list[int]], max_new_tokens: int, cache_dtype: str):
    """The runner for this batch, sized for the longest prompt plus the new tokens."""
    from . import Runner

    longest = max(len(i) for i in ids)
    return Runner(net, len(ids), longest + max_new_tokens, cache_dtype=None if cache_dtype == "auto" else cache_dtype)


def capture(runner, ids: list[list[int]], params, dev: str, console) -> None:
    """On CUDA: capture the decode graph and run one untimed prefill of the same prompts, so
    that one-time set-up (kernel builds, library handles) is not counted as prefill."""
    if not dev.startswith("cuda"):
        return
    import torch

    with console.status("capturing the decode graph …"):
        runner.prepare(params)
        runner.prefill(ids, params)
        torch.cuda.synchronize()


def stream_one(runner, tok, text: str, ids: list[list[int]], max_new_tokens: int, params, stdout):
    """Generate for one prompt, printing the prompt and then the text as it is decoded."""
    got: list[int] = []
    shown = [""]

    def on_tokens(step_ids):  # one host sync per step: the token being printed
        got.append(step_ids[0])
        decoded = tok.decode(got)
        if decoded.startswith(shown[0]):
            stdout.print(decoded[len(shown[0]) :], end="", markup=False, soft_wrap=True)
            shown[0] = decoded

    stdout.print(text, end="", markup=False, soft_wrap=True)
    res = runner.generate(ids, max_new_tokens, params, on_tokens=on_tokens)
    rest = tok.decode(res.tokens[0])
    stdout.print(rest[len(shown[0]) :] if rest.startswith(shown[0]) else "", markup=False)
    return res


def generate_batch(runner, tok, texts: list[str], ids: list[list[int]], max_new_tokens: int, params, stdout):
    """Generate for every prompt as one batch, then print each prompt with its completion."""
    res = runner.generate(ids, max_new_tokens, params, on_tokens=None)
    for i, (t, g) in enumerate(zip(texts, res.tokens)):
        stdout.print(f"--- [{i}] ---", markup=False)
        stdout.print(t + tok.decode(g), markup=False, soft_wrap=True)
    return res
