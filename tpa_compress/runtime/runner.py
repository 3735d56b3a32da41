"""The cached decoder: prefill a left-padded batch, then decode one token per step.

Reuses the model's blocks and weights: each block runs as in the reference forward,
with its attention swapped for a closure that reads/writes the cache. On CUDA the
decode step has static shapes (one write index per batch, a device-side column
counter) and is captured once in a CUDA graph; prefill runs eagerly. `compile=True`
(the CUDA default above a batch of plan.UNCOMPILED_MAX_BATCH or over a lossy cache) fuses
the small element-wise kernels (norms, RoPE, MLP gate, the tile update) with torch.compile;
the graph then replays them with no launch cost.
Without it, each layer's residual adds and norms still run fused on CUDA: the family's
`decode_finish` over runtime/norms.py's Triton kernels (no torch.compile to import or trace),
and the step's bookkeeping before layer 0 and after sampling is one kernel each
(runtime/bookkeeping.py).
What writes each layer's cache entries and what computes its attention is the decode plan
(plan.py: `Runner.plan`, from `DecodeOptions`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import warnings
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from ..errors import TPAError, non_finite_error
from ..layout import LayerLayout, cache_bytes
from ..methods.layers import layout_of_model
from ..models.common import rope_cos_sin
from . import bookkeeping, cuda_decode, norms
from . import gemv as gemv_mod
from .attention import (
    allowed,
    attend_tiles,
    direct_decode,
    entries_written,
    exact_sink_entries,
    fused_qkv_bias,
    fused_qkv_weight,
    key_scale_terms,
    new_entries,
    new_entries_fused,
    sink_of,
    tile_update,
)
from .backends import ATTENTION, ENTRIES, LayerContext
from .backends.triton import KernelAttend
from .cache import DTYPE_NAMES, KVCache, quantize, write_positions
from .gemv import torch_glu_linear
from .plan import DecodeOptions, graph_safe, plan_layer
from .sampling import SamplingParams, sample


@dataclass
class GenerateResult:
    tokens: list[list[int]]  # generated ids per sequence (cut after EOS)
    prompt_tokens: int
    prefill_s: float
    decode_s: float
    decode_steps: int
    kv_bytes: int
    predicted_kv_bytes: float
    peak_memory: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / max(self.prefill_s, 1e-9)

    @property
    def decode_tok_s(self) -> float:
        return len(self.tokens) * self.decode_steps / max(self.decode_s, 1e-9)


def _tail(block, next_norm, h, o, w_gu=None, mm=F.linear, glu_mm=torch_glu_linear):
    """o_proj + the block's `finish` + the next layer's input norm: one compiled unit.
    w_gu: the MLP's gate and up projections as one matrix [W_gate; W_up] (the family's
    `finish_with` takes the MLP as a function); mm: x, W -> x @ W^T; glu_mm: the down
    projection from the gate|up output."""
    a = mm(o, block.self_attn.o_proj.weight)
    if w_gu is None:
        h = block.finish(h, a)
    else:
        mlp = block.mlp
        h = block.finish_with(h, a, lambda x: glu_mm(mm(x, w_gu), mlp.down_proj.weight, mlp.gelu))
    return h, next_norm(h)


def fused_tail(family, block, next_norm, h, o, w_gu=None, mm=F.linear, glu_mm=torch_glu_linear):
    """`_tail` without torch.compile: o_proj, then the family's `decode_finish` (its residual
    adds and norms as runtime/norms.py kernels, a few launches per layer)."""
    a = mm(o, block.self_attn.o_proj.weight)
    mlp = block.mlp
    if w_gu is not None:
        down, gelu = mlp.down_proj.weight, mlp.gelu
        mlp = lambda x: glu_mm(mm(x, w_gu), down, gelu)  # noqa: E731
    return family.decode_finish(block, h, a, mlp, next_norm)


def _step_head(model, tok, col, pad, tables, rope_keys, dtype):
    """A decode step's bookkeeping before layer 0, one compiled unit (a handful of kernels
    instead of ~20 eager ones): query positions, each position table's write and the
    write slot per capacity (cache.write_positions for one column), cos/sin per
    RoPE kind, the embedding and layer 0's input norm."""
    q_pos = (col - pad)[:, None]
    slots = write_positions(tables, col, q_pos)
    ropes = {rk: rope_cos_sin(q_pos, model.cfg.head_dim, *rk, dtype) for rk in rope_keys}
    h = model.embed(tok[:, None])
    return q_pos, slots, ropes, h, model.layers[0].input_layernorm(h)


def _advance(nxt, eos: int, done, ids, tok, col):
    """The step's sampled tokens `nxt` (B,) into the static state: finished sequences keep
    emitting EOS, the token into `ids` and `tok`, the column counter advanced."""
    if eos >= 0:
        nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
        done |= nxt == eos
    ids.index_copy_(1, col + 1, nxt[:, None])
    tok.copy_(nxt)
    col.add_(1)


def _mask_bias(q_pos, k_pos, window, dtype):
    """(B, 1, 1, S) additive mask, made once per step and shared by layers of one kind."""
    ok = allowed(q_pos, k_pos, window)[:, None]
    return torch.zeros(ok.shape, dtype=dtype, device=ok.device).masked_fill(~ok, float("-inf"))


def _eager():
    stance = getattr(torch.compiler, "set_stance", None)
    return stance("force_eager") if stance else contextlib.nullcontext()


class Runner:
    def __init__(
        self,
        model,
        batch: int,
        max_len: int,
        cache_dtype: str | None = None,
        options: DecodeOptions | None = None,
        **overrides,
    ):
        """options: the decode step's choices (plan.DecodeOptions); overrides: some of its
        fields by name (e.g. compile=False), over `options`."""
        cfg = model.cfg
        if max_len > cfg.max_position_embeddings:
            raise TPAError(f"max length {max_len} exceeds the model's {cfg.max_position_embeddings} positions")
        w = model.embed_tokens.weight
        self.model, self.cfg, self.device, self.dtype = model, cfg, w.device, w.dtype
        cuda = self.device.type == "cuda"
        cache_dtype = cache_dtype or ("bf16" if cuda else DTYPE_NAMES.get(w.dtype, "fp32"))
        self.options = DecodeOptions.of(options, **overrides).resolved(self.device, batch, cache_dtype)
        self.layouts: list[LayerLayout] = [replace(lay, cache_dtype=cache_dtype) for lay in layout_of_model(model)]
        for i, lay in enumerate(self.layouts):
            attn = model.layers[i].self_attn
            for c, proj in ((lay.k, attn.k_proj), (lay.v, attn.v_proj)):
                if sink_of(lay) and c.kind != "full" and getattr(proj, "sink", None) is None:
                    raise TPAError(
                        f"layer {i}: layout has {lay.sink} sink tokens but the {c.kind} "
                        f"projection holds no exact sink weights"
                    )
        # decode steps before every sequence has written its sink positions (host counters:
        # a prompt shorter than the sink writes them eagerly, the graph never does)
        self.max_sink = max((sink_of(lay) for lay in self.layouts), default=0)
        self.shortest, self.steps_done = 0, 0
        self.batch, self.max_len = batch, max_len
        self.cache = KVCache(self.layouts, batch, max_len, self.device)
        for blk, lc in zip(model.layers, self.cache.layers):
            if lc.ks is not None:  # a latent K's norm factors, computed as entries are written
                lc.ks_terms = key_scale_terms(blk.self_attn)
        # keys per tile when K is rebuilt: bounded fp32 scratch (~64 MB), 512..8192
        kv_row = batch * cfg.num_kv_heads * cfg.head_dim * 4
        self.tile = self.options.tile or max(512, min(8192, (128 << 20) // kv_row // 512 * 512))
        self.query_tile = self.options.query_tile
        self.pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else 0
        self.eos = cfg.eos_token_id if cfg.eos_token_id is not None else -1
        z = lambda *s, dt=torch.long: torch.zeros(*s, dtype=dt, device=self.device)  # noqa: E731
        self.tok, self.col, self.pad = z(batch), z(1), z(batch)
        self.done = z(batch, dt=torch.bool)
        self.ids = torch.full((batch, max_len), self.pad_id, dtype=torch.long, device=self.device)
        # a grouped cache appends on the host (its group counters): the step then runs eagerly
        self.use_graph = self.options.cuda_graph and graph_safe(self.cache.layers)
        self.pdl = self.options.pdl
        self.graph, self.graph_key = None, None  # the captured step and the (params, EOS) it bakes in
        # on CUDA without torch.compile the family's fused tail (runtime/norms.py kernels) and
        # the step's head and advance as one kernel each (runtime/bookkeeping.py)
        self.update = tile_update
        self.tail = functools.partial(fused_tail, cfg.family_spec) if cuda else _tail
        self.entries, self.entries_written = new_entries_fused, entries_written
        self.direct, self.bias_fn = direct_decode, _mask_bias
        self.head = bookkeeping.step_head if cuda and bookkeeping.head_serves(model, self.tok) else _step_head
        self.advance = bookkeeping.advance if cuda and norms.kernel_serves(self.tok) else _advance
        self.rope_keys = tuple(dict.fromkeys((cfg.rope_base(i), cfg.rope_scale(i)) for i in range(cfg.num_layers)))
        self.w_qkv, self.b_qkv, self.w_gu = None, None, None
        self.mm, self.glu_mm = F.linear, torch_glu_linear
        if self.options.gemv and self.options.compile:
            self.mm, self.glu_mm = gemv_mod.traced_linear, gemv_mod.traced_glu_linear
        elif self.options.gemv:
            self.mm, self.glu_mm = gemv_mod.linear, gemv_mod.glu_linear
        if self.options.compile:
            self._compile()
        self._build_plan()

    # -- setup ---------------------------------------------------------------------
    def _cache_tensors(self, i: int) -> list:
        lc = self.cache.layers[i]
        return [t for t in (lc.kv, lc.ks) if t is not None]

    def _cache_nbytes(self, i: int) -> int:
        return sum(t.numel() * t.element_size() for t in self._cache_tensors(i))

    def _build_plan(self) -> None:
        """Each layer's entries writer and attention backend (plan.plan_layer), built."""
        ctxs = [
            LayerContext(i, blk.self_attn, lay, lc, self.dtype, self.options)
            for i, (blk, lay, lc) in enumerate(zip(self.model.layers, self.layouts, self.cache.layers))
        ]
        plan = [plan_layer(c) for c in ctxs]
        if any(p.entries != "eager" for p in plan):
            self.fuse_weights()
        self.writers = [ENTRIES[p.entries].build(self, p.layer) for p in plan]
        self.attend = [ATTENTION[p.attention].build(self, p.layer) for p in plan]
        # the kernel backends' per-layer objects (what a layer is actually served by: the cuda
        # backend falls back to the Triton kernel where NVRTC fails)
        self.kernels = {i: f.kernel for i, f in enumerate(self.attend) if isinstance(f, KernelAttend)}
        self.entry_kernels = {i: f.kernel for i, f in enumerate(self.writers) if hasattr(f, "kernel")}
        self.plan = [replace(p, attention=getattr(f, "backend", p.attention)) for p, f in zip(plan, self.attend)]
        self.masked = {
            (lc.capacity, lay.window)
            for p, lay, lc in zip(self.plan, self.layouts, self.cache.layers)
            if ATTENTION[p.attention].needs_mask
        }
        # batch 1 leaves DRAM idle most of the step, so the next kernel-served layer's cache is
        # asked of L2 meanwhile, where it is large enough to matter and fits L2 with room to spare
        self.prefetch, self.pf_stream = set(), None
        o = self.options
        if self.device.type == "cuda" and o.prefetch:
            l2 = torch.cuda.get_device_properties(self.device).L2_cache_size
            self.prefetch = {
                i for i in self.kernels if i > 0 and o.prefetch_min <= self._cache_nbytes(i) <= l2 * o.prefetch_max_l2
            }
            self.pf_stream = torch.cuda.Stream(self.device) if self.prefetch else None

    def _compile(self):
        import torch._dynamo
        import torch._inductor.config as inductor_config

        # one compiled graph serves every layer (weights are graph inputs); a few variants
        # per kind of layout
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        # inductor compiles in-process unless TORCHINDUCTOR_COMPILE_THREADS asks for its pool of
        # worker processes: with its caches warm (every run after a machine's first) the pool
        # compiles nothing, and starting and stopping it costs seconds of every process's wall
        if "TORCHINDUCTOR_COMPILE_THREADS" not in os.environ:
            inductor_config.compile_threads = 1
        # fp32 matmuls (norm factors, a fp32 model) keep full precision: inductor's TF32 notice
        # is not for this runtime's users
        warnings.filterwarnings("ignore", message="TensorFloat32 tensor cores")
        pdl = self.pdl and hasattr(inductor_config.triton, "enable_pdl")
        compile = functools.partial(torch.compile, dynamic=False, options={"triton.enable_pdl": True} if pdl else None)
        self.entries = compile(new_entries_fused)
        # a plain cache: the write (and a k_scale layout's norm factors) in the same graph, so
        # they fuse into the projection's epilogue instead of launching kernels of their own
        self.entries_written = compile(entries_written)
        self.update = compile(tile_update)
        self.tail = compile(_tail)
        self.direct = compile(direct_decode)
        self.bias_fn = compile(_mask_bias)
        self.head = compile(_step_head)
        self.advance = compile(_advance)
        quant = compile(quantize)
        for lc in self.cache.layers:
            if lc.quant and not lc.grouped:
                lc.quantize = quant

    def fuse_weights(self):
        """Q/K/V (or their encoders) as one matmul, the MLP's gate and up as another: a
        copy of those weights buys fewer kernels per layer and step (launch-bound at
        batch 1)."""
        self.w_qkv = [fused_qkv_weight(b.self_attn, lay) for b, lay in zip(self.model.layers, self.layouts)]
        self.b_qkv = [fused_qkv_bias(b.self_attn, lay) for b, lay in zip(self.model.layers, self.layouts)]
        self.w_gu = [torch.cat([b.mlp.gate_proj.weight, b.mlp.up_proj.weight]).contiguous() for b in self.model.layers]

    def predicted_kv_bytes(self) -> float:
        return cache_bytes(self.layouts, self.max_len, self.batch)

    def _rope(self, i: int, pos: torch.Tensor):
        return self.model.rope(i, pos, self.dtype)

    # -- prefill -------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, prompts: list[list[int]], params: SamplingParams) -> torch.Tensor:
        """Run the prompts (left-padded), fill the cache, sample the first new token."""
        b, longest = len(prompts), max(len(p) for p in prompts)
        if b != self.batch:
            raise TPAError(f"{b} prompts for a runner built for batch {self.batch}")
        if longest >= self.max_len:
            raise TPAError(f"prompt of {longest} tokens leaves no room: max length is {self.max_len}")
        dev = self.device
        pads = torch.tensor([longest - len(p) for p in prompts], device=dev)
        ids = torch.tensor([[self.pad_id] * (longest - len(p)) + list(p) for p in prompts], device=dev)
        cols = torch.arange(longest, device=dev)
        q_pos = cols[None] - pads[:, None]
        self.cache.reset()
        self.cache.write_positions(cols, q_pos)
        self.shortest, self.steps_done = min(len(p) for p in prompts), 0
        # compiled modules are for the decode shapes; prefill shapes vary (and without them,
        # setting the stance would import torch.compile's stack for nothing)
        with _eager() if self.options.compile else contextlib.nullcontext():
            h = self.model.embed(ids)
            for i, block in enumerate(self.model.layers):
                h = block(h, lambda x, i=i: self._prefill_attn(i, x, q_pos, cols, pads))
            logits = self.model.logits(self.model.norm(h[:, -1]))
        tok = sample(logits, params)
        self.ids[:, :longest] = ids
        self.ids[:, longest] = tok
        self.tok.copy_(tok)
        self.col.fill_(longest)
        self.pad.copy_(pads)
        self.done.copy_(tok == self.eos)
        return logits

    def _prefill_sink(self, i, attn, lay, lc, x, pads):
        """Exact K/V of each sequence's positions 0..sink-1 (its first real columns) into
        the sink buffers; returns them as the sink tile. Rows past a short prompt hold
        junk until the decode step of that position writes them (never seen before)."""
        b, t, _ = x.shape
        sp = torch.arange(lc.sink, device=x.device)
        cols = (pads[:, None] + sp).clamp(max=t - 1)
        xs = x.gather(1, cols[..., None].expand(-1, -1, x.shape[-1]))
        ks, vs = exact_sink_entries(attn, lay, xs, *self._rope(i, sp.expand(b, -1)))
        for buf, e in ((lc.sk, ks), (lc.sv, vs)):
            buf.copy_(e.transpose(1, 2).flatten(2))
        return ks, vs

    def _prefill_attn(self, i, x, q_pos, cols, pads):
        attn, lay, lc = self.model.layers[i].self_attn, self.layouts[i], self.cache.layers[i]
        cos, sin = self._rope(i, q_pos)
        q, ke, ve = new_entries(attn, lay, x, cos, sin)
        sink = self._prefill_sink(i, attn, lay, lc, x, pads) if lc.sink else None
        t, w = x.shape[1], attn.window
        outs = []
        for qs in range(0, t, self.query_tile):
            qe = min(t, qs + self.query_tile)
            lo = max(0, qs - w + 1) if w is not None else 0  # earlier keys are out of every window
            spans = [(a, min(qe, a + self.tile)) for a in range(lo, qe, self.tile)]
            tiles = [(ke[:, a:e], ve[:, a:e], q_pos[:, a:e]) for a, e in spans]
            outs.append(attend_tiles(attn, lay, q[:, :, qs:qe], q_pos[:, qs:qe], tiles, sink=sink))
        n = min(t, lc.capacity)  # a ring keeps the last `capacity` columns
        if lc.grouped:  # every column: a grouped cache quantizes whole groups of them
            lc.append(ke, ve)
        else:
            lc.write(cols[-n:] % lc.capacity, ke[:, -n:], ve[:, -n:])
        o = torch.cat(outs, dim=2)
        return attn.o_proj(o.transpose(1, 2).reshape(x.shape[0], t, -1))

    # -- decode --------------------------------------------------------------------
    def _step(self, params: SamplingParams, write_sink: bool = False) -> None:
        """One decode step on the static state: tok at column col -> next tok at col + 1.

        Per layer: entries (Q and the new cache entries) -> cache write -> attention
        -> `tail` (o_proj, the block's `finish`, the next layer's input norm), so the
        compiled path has a handful of kernels per layer.
        """
        q_pos, slots, ropes, h, x = self.head(
            self.model, self.tok, self.col, self.pad, self.cache.positions, self.rope_keys, self.dtype
        )
        masks = {(c, w): self.bias_fn(q_pos, self.cache.positions[c], w, self.dtype) for c, w in self.masked}
        layers = self.model.layers
        for i, block in enumerate(layers):
            if i + 1 in self.prefetch:  # the next layer's cache into L2 while this one runs
                self.pf_stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(self.pf_stream):
                    for t in self._cache_tensors(i + 1):
                        cuda_decode.prefetch_l2(t)
            cs = ropes[(self.cfg.rope_base(i), self.cfg.rope_scale(i))]
            o = self._decode_attn(i, x, q_pos, cs, masks, slots, write_sink)
            norm = layers[i + 1].input_layernorm if i + 1 < len(layers) else self.model.norm
            h, x = self.tail(block, norm, h, o, None if self.w_gu is None else self.w_gu[i], self.mm, self.glu_mm)
        if self.pf_stream is not None:  # (the side stream rejoins: a captured graph needs it)
            torch.cuda.current_stream().wait_stream(self.pf_stream)
        logits = self.model.logits(x[:, 0])
        # sampling eager: ATen's argmax spreads over many blocks (inductor's took one program per
        # row: 54 vs 9 us for 262K logits), and the RNG stays graph-safe as it is
        self.advance(sample(logits, params), self.eos, self.done, self.ids, self.tok, self.col)
        self.last_logits = logits  # a static buffer under the graph: read after replay

    def _sink_write(self, attn, lay, lc, x, q_pos, cos_sin):
        """Decode of a position < sink (a prompt shorter than the sink): its exact K/V
        into row q_pos of the sink buffers, for the sequences at such a position."""
        k, v = exact_sink_entries(attn, lay, x, *cos_sin)
        idx = q_pos.clamp(0, lc.sink - 1)
        hit = ((q_pos >= 0) & (q_pos < lc.sink))[..., None]
        for buf, e in ((lc.sk, k), (lc.sv, v)):
            ix = idx[..., None].expand(-1, -1, buf.shape[-1])
            buf.scatter_(1, ix, torch.where(hit, e.transpose(1, 2).flatten(2).to(buf.dtype), buf.gather(1, ix)))

    def _sink_tile(self, attn, lc):
        """The exact sink tile (ks, vs), each (B, kv, S, D): views of the sink buffers."""
        b, n = self.batch, lc.sink
        return tuple(t.view(b, n, attn.n_kv, attn.head_dim).transpose(1, 2) for t in (lc.sk, lc.sv))

    def _decode_attn(self, i, x, q_pos, cos_sin, masks, slots, write_sink=False):
        """Attention output before o_proj, (B, 1, H*D): the layer's planned entries writer,
        then its attention backend (plan.py)."""
        attn, lay, lc = self.model.layers[i].self_attn, self.layouts[i], self.cache.layers[i]
        slot = slots[lc.capacity]
        q = self.writers[i](x, cos_sin, slot)
        sink = None
        if lc.sink:
            if write_sink:
                self._sink_write(attn, lay, lc, x, q_pos, cos_sin)
            sink = self._sink_tile(attn, lc)
        return self.attend[i](q, q_pos, masks.get((lc.capacity, lay.window)), slot, sink)

    def _capture(self, params: SamplingParams) -> None:
        """Warm up (compiles, cuBLAS handles) on a side stream, then capture one step."""
        self.col.zero_()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                self._step(params)
        torch.cuda.current_stream().wait_stream(s)
        self.col.zero_()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            self._step(params)
        self.graph, self.graph_key = g, (params, self.eos)
        self.graph_logits = self.last_logits  # the graph's static buffer (an eager step rebinds)
        self.cache.reset()  # warm-up wrote junk; prefill resets the tables anyway

    @torch.no_grad()
    def step(self, params: SamplingParams) -> None:
        write_sink = self.shortest + self.steps_done < self.max_sink
        self.steps_done += 1
        if not self.use_graph or write_sink:
            return self._step(params, write_sink)
        if self.graph_key != (params, self.eos):
            raise TPAError("internal: decode graph not captured for these sampling params and EOS")
        self.graph.replay()
        self.last_logits = self.graph_logits

    @torch.no_grad()
    def prepare(self, params: SamplingParams) -> None:
        """Capture the decode graph (CUDA) before timing anything; a no-op on CPU."""
        if self.use_graph and self.graph_key != (params, self.eos):
            self._capture(params)

    # -- the loop ------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        params: SamplingParams = SamplingParams(),
        on_tokens=None,
        stop_at_eos: bool = True,
    ) -> GenerateResult:
        """Generate up to `max_new_tokens` per prompt.

        `on_tokens(list_of_ids)` is called with each step's tokens (one host sync per
        step, for streaming); without it the loop only syncs every 32 steps to check EOS.
        """
        if max_new_tokens < 1:
            raise TPAError(f"--max-new-tokens {max_new_tokens} must be at least 1")
        longest = max(len(p) for p in prompts)
        if longest + max_new_tokens > self.max_len:
            raise TPAError(
                f"prompt of {longest} tokens + {max_new_tokens} new tokens exceeds the max length {self.max_len}"
            )
        self.prepare(params)
        cuda = self.device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        logits = self.prefill(prompts, params)
        if not bool(torch.isfinite(logits).all()):
            raise non_finite_error(self.dtype)
        if on_tokens:
            on_tokens(self.tok.tolist())
        sync()
        t1 = time.perf_counter()
        steps = 0
        for s in range(max_new_tokens - 1):
            if stop_at_eos and (on_tokens or s % 32 == 0) and bool(self.done.all()):
                break
            self.step(params)
            steps += 1
            if on_tokens:
                on_tokens(self.tok.tolist())
        sync()
        t2 = time.perf_counter()
        if steps and not bool(torch.isfinite(self.last_logits).all()):
            raise non_finite_error(self.dtype)
        start = longest
        gen = self.ids[:, start : start + 1 + steps].tolist()
        if stop_at_eos and self.eos >= 0:
            gen = [g[: g.index(self.eos) + 1] if self.eos in g else g for g in gen]
        return GenerateResult(
            tokens=gen,
            prompt_tokens=sum(len(p) for p in prompts),
            prefill_s=t1 - t0,
            decode_s=t2 - t1,
            decode_steps=steps,
            kv_bytes=self.cache.kv_bytes,
            predicted_kv_bytes=self.predicted_kv_bytes(),
            peak_memory=torch.cuda.max_memory_allocated() if cuda else None,
        )
