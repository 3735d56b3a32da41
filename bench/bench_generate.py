"""Decode speed: our cached runner vs transformers `generate`, on the GPU. A benchmark,
not a test; random weights (speed does not depend on them).

    python bench/bench_generate.py --out bench_generate.json [--models 270m,1b]
        [--batches 1,32] [--contexts 128,4096,32768] [--layouts original,converted]
        [--cache-dtypes bf16,fp8,int8] [--ranks 128/128] [--new-tokens 64] [--no-hf] [--check]

For each Gemma 3 config (tpa_compress.load.ckpt.VARIANTS), batch and context (tokens in
the cache while decoding: prompt = context - new tokens), it runs our runner (bf16,
CUDA-graph decode) on the original layout and on a converted one (latent K and V of
rank 128 on the global layers, random factors except that K's up-projection has
orthonormal columns, as activation_svd writes it (--k-basis random: not even that),
1 exact sink token: ~50% of the cache at 32K, a proxy for what the balanced recipe budgets;
--ranks sets other K/V ranks, per global layer too: the real balanced conversion of 270M
chooses 80,96,112/112,160,128, docs/methods.md "Ranks the GPU kernel serves"), and
transformers' Gemma3ForCausalLM built from the same config with the default dynamic
cache and with cache_implementation="static". Every timing follows a warm-up call.
Decode tok/s for transformers = batch * (N - 1) / (time(N new) - time(1 new)).

Memory-bandwidth fraction = bytes one decode step must read (every weight once, the
LM head included, plus the cached K/V it attends over) / step time / peak bandwidth
(--bandwidth; by default the GPU's own by name: H200 4.8e12, H100 SXM 3.35e12 B/s).
Peak memory: the row's, above what was still allocated when it started (memory_before:
what earlier rows of the process left, 0.09-0.16 GiB after 1-3 rows of 270M), so a row's
peak does not depend on the rows before it, except for process-wide buffers, such as
cuBLAS workspaces, that an earlier row made (the 270M original at batch 1, 32K: 1.29 GiB
after three rows, 1.35 alone; bench/results/2026-12-02-s14/run05).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tpa_compress.cache_formats import split_specs  # noqa: E402
from tpa_compress.errors import TPAError  # noqa: E402
from tpa_compress.layout import Component, cache_bytes, original_layouts  # noqa: E402
from tpa_compress.load.ckpt import variant_config  # noqa: E402
from tpa_compress.methods.layers import make_proj  # noqa: E402
from tpa_compress.models import Transformer  # noqa: E402
from tpa_compress.runtime import CudaBuild, Runner, TritonTuning  # noqa: E402


def random_model(cfg, layout: str, ranks: str = "128/128", sink: int = 1, k_basis: str = "orthonormal"):
    """ranks "K/V": one rank for every global layer, or one per global layer in order
    (e.g. what a balanced conversion chose: "81,91,117/118,165,136")."""
    torch.manual_seed(0)
    with torch.device("cuda"):
        m = Transformer(cfg)
        if layout == "converted":
            glob = [i for i in range(cfg.num_layers) if cfg.window(i) is None]
            per = [[int(x) for x in part.split(",")] for part in ranks.split("/")]
            per = [r * len(glob) if len(r) == 1 else r for r in per]
            for j, i in enumerate(glob):
                attn = m.layers[i].self_attn
                for name, r in (("k_proj", per[0][j]), ("v_proj", per[1][j])):
                    if r == 0:  # rank 0: this one stays full (e.g. "0/128": latent V only)
                        continue
                    c = Component("latent", cfg.num_kv_heads, cfg.head_dim, r)
                    setattr(attn, name, make_proj(cfg.hidden_size, c, sink))
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.copy_(torch.zeros_like(p) if "norm" in n else torch.randn_like(p) * 0.02)
            if k_basis == "orthonormal" and n.endswith("k_proj.up.weight"):  # the PCA's eigenvectors
                p.copy_(torch.linalg.qr(p.float())[0])
    return m.to(torch.bfloat16).eval().requires_grad_(False)


def step_bytes(model, layouts, context: int, batch: int) -> float:
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return weights + cache_bytes(layouts, context, batch)


def prompts_for(cfg, batch, length, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, cfg.vocab_size, (batch, length), generator=g).tolist()


def memory_before() -> int:
    """GPU bytes still allocated before a row builds its model: what earlier rows of this
    process left behind (compiled graphs, their pools, library workspaces). A row's peak is
    reported above this, so that it depends less on the rows run before it."""
    torch._dynamo.reset()
    gc.collect()
    torch.cuda.empty_cache()
    return torch.cuda.memory_allocated()


def parse_options(text: str) -> dict:
    """ "a=1,b=x" -> {"a": 1, "b": "x"} (--runner-options)."""
    return {k: int(v) if v.lstrip("-").isdigit() else v for k, v in (o.split("=") for o in text.split(",") if o)}


def ours(
    cfg,
    layout,
    batch,
    context,
    new,
    bw,
    cache_dtype="bf16",
    tuning=None,
    ranks="128/128",
    k_basis="orthonormal",
    pdl=None,
    prefetch=None,
    runner_options=None,
    cuda_kernel="",
):
    """Our runner's row; tuning: the Triton kernels' (TritonTuning; None: the default);
    cuda_kernel: the cuda backend's kernel (CudaBuild.kernel; "": the default)."""
    before = memory_before()
    model = random_model(cfg, layout, ranks, k_basis=k_basis)
    r = Runner(
        model,
        batch,
        context,
        cache_dtype=cache_dtype,
        tuning=tuning,
        pdl=pdl,
        prefetch=prefetch,
        cuda_build=CudaBuild(kernel=cuda_kernel) if cuda_kernel else None,
        **(runner_options or {}),
    )
    prompts = prompts_for(cfg, batch, context - new)
    r.generate(prompts, 8, stop_at_eos=False)  # warm-up: compile + capture + first prefill
    res = r.generate(prompts, new, stop_at_eos=False)
    ms = 1e3 * res.decode_s / res.decode_steps
    moved = step_bytes(model, r.layouts, context, batch)
    out = dict(
        runner="ours",
        layout=layout,
        ranks=ranks if layout == "converted" else None,
        cache_dtype=cache_dtype,
        tuning=asdict(tuning) if tuning is not None else None,
        runner_options=runner_options,
        tok_s=res.decode_tok_s,
        ms_per_step=ms,
        prefill_tok_s=res.prefill_tok_s,
        kv_bytes=res.kv_bytes,
        predicted_kv_bytes=res.predicted_kv_bytes,
        peak_memory=res.peak_memory - before,
        memory_before=before,
        bytes_per_step=moved,
        bw_fraction=moved / (ms / 1e3) / bw,
        k_basis=k_basis if layout == "converted" else None,
        pdl=r.pdl,
        prefetch=sorted(r.prefetch),
        norm_from_latent=sum(k.norm_z for k in r.kernels.values()),
        plan=sorted({f"{p.entries}/{p.attention}" for p in r.plan}),  # the decode plan's rows
        # which decode kernel each latent layer takes (the CUDA one serves only some ranks)
        kernels=sorted(
            f"{i}:{k.cuda_kind if k.cuda else 'triton'}" for i, k in r.kernels.items() if k.k_latent or k.v_latent
        ),
    )
    del r, model
    torch.cuda.empty_cache()
    return out


def hf(cfg, impl, batch, context, new, bw):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from tpa_compress.load.hf import config_to_hf

    d = config_to_hf(cfg)
    d.pop("architectures", None)
    torch.manual_seed(0)
    before = memory_before()
    hc = Gemma3TextConfig(**{k: v for k, v in d.items() if k != "model_type"})
    with torch.device("cuda"):
        m = Gemma3ForCausalLM(hc).to(torch.bfloat16).eval()
    ids = torch.tensor(prompts_for(cfg, batch, context - new), device="cuda")
    kw = dict(do_sample=False, pad_token_id=0)
    if impl == "static":
        kw["cache_implementation"] = "static"

    def run(n):
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.no_grad():
            o = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, **kw)
        torch.cuda.synchronize()
        assert o.shape[1] == ids.shape[1] + n
        return time.perf_counter() - t

    run(new)  # warm-up
    torch.cuda.reset_peak_memory_stats()
    t_all = run(new)
    peak = torch.cuda.max_memory_allocated()
    t_one = min(run(1), run(1))
    dec = max(t_all - t_one, 1e-9)
    ms = 1e3 * dec / (new - 1)
    moved = sum(p.numel() * p.element_size() for p in m.parameters()) + cache_bytes(
        original_layouts(cfg), context, batch
    )
    out = dict(
        runner=f"transformers-{impl}",
        layout="original",
        tok_s=batch * (new - 1) / dec,
        ms_per_step=ms,
        prefill_tok_s=batch * ids.shape[1] / t_one,
        kv_bytes=None,
        peak_memory=peak - before,
        memory_before=before,
        bytes_per_step=moved,
        bw_fraction=moved / (ms / 1e3) / bw,
    )
    m = None  # the model goes before empty_cache (run() holds it too)
    torch.cuda.empty_cache()
    return out


def gpu_check(device="cuda"):
    """Greedy tokens of the (CUDA-graph) runner == reference forward, tiny fp32 models:
    original, random latent K/V, and the identity conversion (GQA as TPA, via convert)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny import CharTok, random_state, tiny_config
    from tpa_compress.convert import convert
    from tpa_compress.load.source import Checkpoint, WeightSource
    from tpa_compress.models import build_model
    from tpa_compress.recipe import parse_recipe

    res = {}
    for family in ("gemma3", "llama"):
        for layout in ("original", "latent", "identity"):
            cfg = tiny_config(family)
            ck = Checkpoint(cfg, WeightSource.from_dict(random_state(cfg, 3)), CharTok(), "", "m")
            model = build_model(ck)
            if layout == "identity":
                rec = parse_recipe(
                    {
                        "calibration": {"tokens": 256, "seq_len": 32, "heldout_tokens": 32},
                        "layers": [{"select": "all", "k": {"method": "identity"}, "v": {"method": "identity"}}],
                    },
                    "identity",
                )
                convert(ck, model, rec, eval_model=False, log=lambda m: None)
            model = model.to(device)
            if layout == "latent":
                g = torch.Generator(device=device).manual_seed(0)
                for blk in model.layers:
                    for nm, r in (("k_proj", 12), ("v_proj", 10)):
                        comp = Component("latent", cfg.num_kv_heads, cfg.head_dim, r)
                        p = make_proj(cfg.hidden_size, comp).to(device)
                        with torch.no_grad():
                            for t in p.parameters():
                                t.copy_(torch.randn(t.shape, generator=g, device=device) * 0.5 / t.shape[-1] ** 0.5)
                        setattr(blk.self_attn, nm, p)
            prompts = prompts_for(cfg, 3, 20)
            prompts = [prompts[0][:13], prompts[1][:5], prompts[2]]
            r = Runner(model, 3, 40, cache_dtype="fp32", tile=4)
            gen = r.generate(prompts, 12, stop_at_eos=False).tokens
            ok = True
            for p, t in zip(prompts, gen, strict=True):
                with torch.no_grad():
                    ref = model.logits(model(torch.tensor([p + t], device=device)))[0]
                ok &= ref[len(p) - 1 : len(p) + 11].argmax(-1).tolist() == t
            res[f"{family}-{layout}"] = bool(ok)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="270m,1b")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--contexts", default="128,4096,32768")
    ap.add_argument("--layouts", default="original,converted")
    ap.add_argument("--hf-impls", default="dynamic,static")
    ap.add_argument("--cache-dtypes", default="bf16", help="our runner's KV cache dtypes")
    ap.add_argument(
        "--tuning",
        "--kernel-options",
        default="",
        help="DecodeOptions.tuning for our runner: kernels.TritonTuning fields as name=value, comma-separated, "
        "e.g. latent_combine=0,block_t=64 (experiments; the Triton kernel runs where the cuda backend does not "
        "serve a layer, or first with --runner-options attention=triton)",
    )
    ap.add_argument(
        "--runner-options",
        default="",
        help="DecodeOptions for our runner (runtime/plan.py), e.g. entries=written or gemv=0 (experiments)",
    )
    ap.add_argument(
        "--ranks",
        default="128/128",
        help="converted layout's K/V latent ranks: one each, "
        "or one per global layer, e.g. 81,91,117/118,165,136 (balanced on 270M); 0 keeps "
        "that one full (0/128: latent V only)",
    )
    ap.add_argument(
        "--k-basis",
        default="orthonormal",
        choices=["orthonormal", "random"],
        help="converted K up-projection: orthonormal columns (as activation_svd writes) or random",
    )
    ap.add_argument(
        "--cuda-kernels",
        default="wg",
        help="the CUDA decode kernel(s) converted rows "
        "take (DecodeOptions.cuda_build's kernel), comma-separated to compare: wg, warp, tile (runtime/cuda_decode.py)",
    )
    ap.add_argument(
        "--pdl",
        default="auto",
        help="programmatic dependent launch in our runner: auto (where available), 0, 1; comma-separated to compare",
    )
    ap.add_argument(
        "--prefetch",
        default="auto",
        help="our runner's L2 prefetch of the next layer's cache: "
        "auto (where it fits), 0, 1; comma-separated to compare",
    )
    ap.add_argument(
        "--prefetch-max",
        type=float,
        default=None,
        help="the largest cache prefetched, as a fraction of L2 (DecodeOptions.prefetch_max_l2, default 0.75)",
    )
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--bandwidth", type=float, default=None, help="peak B/s (default: by GPU name)")
    ap.add_argument("--out", default="bench_generate.json")
    a = ap.parse_args()
    tuning = TritonTuning.parse(a.tuning) if a.tuning else None  # bad input: an error before any work
    ropts = parse_options(a.runner_options)
    doc = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "argv": sys.argv, "rows": []}
    try:
        import transformers

        doc["transformers"] = transformers.__version__
    except ImportError:
        pass
    if a.check:
        try:
            doc["gpu_check"] = gpu_check()
        except Exception as e:
            doc["gpu_check"] = f"{type(e).__name__}: {e}"[:500]
            traceback.print_exc()
        print("gpu check", doc["gpu_check"], flush=True)

    if a.prefetch_max is not None:
        ropts["prefetch_max_l2"] = a.prefetch_max

    def save():
        Path(a.out).write_text(json.dumps(doc, indent=1))

    if a.bandwidth is None:  # the spec sheets' peak: H200 4.8 TB/s, H100 SXM 3.35 TB/s
        a.bandwidth = 4.8e12 if "H200" in torch.cuda.get_device_name() else 3.35e12
    doc["bandwidth"] = a.bandwidth
    for name in a.models.split(","):
        cfg = variant_config(name)
        for batch in map(int, a.batches.split(",")):
            for ctx in map(int, a.contexts.split(",")):
                jobs = [
                    ("ours", (lay, cd, ck, pdl, pf))
                    for pdl in a.pdl.split(",")
                    for pf in a.prefetch.split(",")
                    for lay in a.layouts.split(",")
                    if lay
                    for cd in split_specs(a.cache_dtypes)
                    for ck in (a.cuda_kernels.split(",") if lay == "converted" else [""])
                ]
                if not a.no_hf:
                    jobs += [("hf", impl) for impl in a.hf_impls.split(",")]
                for kind, what in jobs:
                    row = dict(model=name, batch=batch, context=ctx)
                    if kind == "ours" and what[2]:
                        row["cuda_kernel"] = what[2]
                    t = time.time()
                    try:
                        row.update(
                            ours(
                                cfg,
                                what[0],
                                batch,
                                ctx,
                                a.new_tokens,
                                a.bandwidth,
                                what[1],
                                tuning,
                                a.ranks,
                                a.k_basis,
                                *(None if x == "auto" else bool(int(x)) for x in what[3:5]),
                                ropts,
                                what[2],
                            )
                            if kind == "ours"
                            else hf(cfg, what, batch, ctx, a.new_tokens, a.bandwidth)
                        )
                    except torch.cuda.OutOfMemoryError:
                        row.update(runner=kind, layout=what, error="OOM")
                    except Exception as e:  # a failed baseline must not end the run
                        row.update(runner=kind, layout=what, error=f"{type(e).__name__}: {e}"[:300])
                        traceback.print_exc()
                    torch.cuda.empty_cache()
                    row["wall_s"] = time.time() - t
                    doc["rows"].append(row)
                    print(json.dumps(row), flush=True)
                    save()
    save()


if __name__ == "__main__":
    try:
        main()
    except TPAError as e:  # bad flags: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
