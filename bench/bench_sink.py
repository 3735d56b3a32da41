"""Does keeping the BOS (attention-sink) token's K/V exact recover the quality the primer saw?

    python bench/bench_sink.py bos   # BOS-led 512-token windows (how Gemma is run)
    python bench/bench_sink.py raw   # raw windows, no BOS (the primer's first protocol)

Prints perplexity on 6 x 512 evaluation windows for four one-shot latent conversions
(activation_svd), each without and with the exact sink token. A measurement, not a test;
results in docs/benchmarks.md. About 10 minutes on 2 CPU cores.
"""

import sys
import time

import torch
from torch import nn

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
torch.set_num_threads(2)
from tpa_compress.calibrate import collect_stats
from tpa_compress.convert import layer_inputs
from tpa_compress.data import default_calib_files, default_eval_files, read_texts
from tpa_compress.evaluate.perplexity import make_windows, perplexity
from tpa_compress.load import load_model
from tpa_compress.methods import get_method
from tpa_compress.methods.layers import make_proj
from tpa_compress.models import build_model

t0 = time.time()
ckpt = load_model("gemma3-270m")
base = build_model(ckpt)
tok = ckpt.tokenizer
cfg = base.cfg
cal_ids = tok.encode(read_texts(default_calib_files()), add_bos=False)
ev_ids = tok.encode(read_texts(default_eval_files()), add_bos=False)
BOS = tok.bos_id if hasattr(tok, "bos_id") else cfg.bos_token_id
mode = sys.argv[1] if len(sys.argv) > 1 else "bos"
bos = BOS if mode == "bos" else None
cal = make_windows(cal_ids, 512, bos, 8)
ev = make_windows(ev_ids, 512, bos, 6)
print("loaded", time.time() - t0, flush=True)
stats = collect_stats(base, cal)
print("stats", time.time() - t0, flush=True)
orig = {i: (b.self_attn.k_proj, b.self_attn.v_proj) for i, b in enumerate(base.layers)}


class Sink(nn.Module):
    """factorized everywhere except the first position, which uses the original."""

    def __init__(self, fact, full):
        super().__init__()
        self.fact, self.full = fact, full

    def forward(self, x):
        y = self.fact(x).clone()
        y[:, :1] = self.full(x[:, :1])
        return y


def build(target, rank, layers, sink):
    m = get_method("activation_svd")(None, seed=0)
    for i in layers:
        inp = layer_inputs(base, i, stats[i])
        f = m.factorize(inp, target, rank)
        proj = make_proj(cfg.hidden_size, f.component)
        sd = {k: v.float() for k, v in f.tensors.items()}
        proj.load_state_dict(sd)
        a = base.layers[i].self_attn
        mod = Sink(proj, orig[i][0 if target == "k" else 1]) if sink else proj
        setattr(a, target + "_proj", mod)


def reset():
    for i, b in enumerate(base.layers):
        b.self_attn.k_proj, b.self_attn.v_proj = orig[i]


p0 = perplexity(base, ev, bos=bos is not None).perplexity
print(f"mode={mode} baseline {p0:.3f}", flush=True)
glob = [i for i in range(cfg.num_layers) if cfg.layer_types[i] == "global"]
allL = list(range(cfg.num_layers))
for name, target, rank, layers in [
    ("V192 all", "v", 192, allL),
    ("K128 all", "k", 128, allL),
    ("V128 glob", "v", 128, glob),
    ("K128 glob", "k", 128, glob),
]:
    for sink in (False, True):
        reset()
        build(target, rank, layers, sink)
        p = perplexity(base, ev, bos=bos is not None).perplexity
        print(
            f"{name:10s} sink={sink!s:5s} ppl {p:.3f} ({100 * (p / p0 - 1):+.1f}%)  t={time.time() - t0:.0f}",
            flush=True,
        )
