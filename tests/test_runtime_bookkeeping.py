"""The decode step's head and advance as Triton kernels (runtime/bookkeeping.py) vs the eager
runner._step_head / runner._advance, and the runner's decode with them vs the eager ones.

On CUDA (pytest --device cuda) or in triton's CPU interpreter; skipped where triton is absent.
Exactness: positions, slots, the tables' writes, the embedding row in fp32 and the whole
advance are bit for bit; cos/sin and the norm within an ulp or two (another cos/sin
implementation off the GPU, another reduction order). Triton's interpreter rounds fp32 ->
bf16 toward zero where the GPU (and torch) round to nearest, so off the GPU bf16 is held
to bf16's tolerance, not to equality.
"""

import pytest
import torch

from test_runtime_norms import _model, close
from test_runtime_sink import DEVICE, GPU, greedy_steps, prompts_of, runner_for
from tpa_compress.runtime import bookkeeping, kernels
from tpa_compress.runtime.cache import EMPTY
from tpa_compress.runtime.runner import _advance, _step_head

pytestmark = [pytest.mark.skipif(not kernels.available(), reason="triton is not installed"), pytest.mark.interpreter]

# Gemma 3: two RoPE kinds (local 10k, global 1M scaled by 8, as the 4B+ models); Llama: one
CONFIGS = {"gemma3": {"rope_scaling_factor": 8.0}, "llama": {}}


def _state(batch, col, capacities, g):
    """A step's inputs at column `col`: tokens, pads (< col), and position tables holding
    earlier writes (ring capacities smaller than col wrap)."""
    tok = torch.randint(3, 97, (batch,), generator=g).to(DEVICE)
    pad = torch.randint(0, col, (batch,), generator=g).to(DEVICE)
    tables = {c: torch.randint(-5, 50, (batch, c), generator=g, dtype=torch.int32).to(DEVICE) for c in capacities}
    for t in tables.values():
        t[:, -1] = EMPTY
    return tok, torch.tensor([col], device=DEVICE), pad, tables


@pytest.mark.parametrize("family", list(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 3])
def test_step_head_equals_eager(family, dtype, batch):
    model = _model(family, **CONFIGS[family]).to(dtype)
    cfg = model.cfg
    rope_keys = tuple(dict.fromkeys((cfg.rope_base(i), cfg.rope_scale(i)) for i in range(cfg.num_layers)))
    assert len(rope_keys) == (2 if family == "gemma3" else 1)
    assert bookkeeping.serves_head(model)
    g = torch.Generator().manual_seed(batch)
    for col in (21, 230):  # past the ring of 8: slot col % 8
        tok, colt, pad, tables = _state(batch, col, (8, 240), g)
        ref_tables = {c: t.clone() for c, t in tables.items()}
        with torch.no_grad():
            want = _step_head(model, tok, colt, pad, ref_tables, rope_keys, dtype)
            got = bookkeeping.step_head(model, tok, colt, pad, tables, rope_keys, dtype)
        q_pos, slots, ropes, h, x = got
        assert q_pos.dtype == torch.long and torch.equal(q_pos, want[0])
        assert slots.keys() == want[1].keys()
        for c in slots:
            assert slots[c].dtype == torch.long and torch.equal(slots[c], want[1][c]), c
            assert torch.equal(tables[c], ref_tables[c]), c
        assert ropes.keys() == want[2].keys()
        for rk in ropes:
            for a, b in zip(ropes[rk], want[2][rk]):
                assert a.shape == b.shape == (batch, 1, cfg.head_dim)
                close(a, b)
        if dtype == torch.float32 or GPU:  # one multiply, rounded once
            assert torch.equal(h, want[3])
        close(h, want[3])
        close(x, want[4])


@pytest.mark.parametrize("batch", [1, 3, 200])
@pytest.mark.parametrize("eos", [-1, 1])
def test_advance_equals_eager(batch, eos):
    g = torch.Generator().manual_seed(batch + 7)
    for step in range(3):
        nxt = torch.randint(0, 4, (batch,), generator=g).to(DEVICE)  # eos (1) often
        done = (torch.rand(batch, generator=g) < 0.3).to(DEVICE)
        ids = torch.randint(0, 97, (batch, 12), generator=g).to(DEVICE)
        tok = torch.randint(0, 97, (batch,), generator=g).to(DEVICE)
        col = torch.tensor([3 + step], device=DEVICE)
        state = [t.clone() for t in (done, ids, tok, col)]
        nxt_in = nxt.clone()
        _advance(nxt, eos, *state)
        bookkeeping.advance(nxt, eos, done, ids, tok, col)
        assert torch.equal(nxt, nxt_in)  # the sampled tokens are read, not written
        for got, want in zip((done, ids, tok, col), state):
            assert torch.equal(got, want)
        assert col.item() == 4 + step


def _decode(runner, prompts, new, eos):
    """Prefill + `new - 1` greedy decode steps with EOS `eos`: each step's logits, and the
    runner's ids and done flags."""
    logits, _ = greedy_steps(runner, prompts, new, eos)
    return logits, runner.ids.clone(), runner.done.clone()


@pytest.mark.parametrize("family", list(CONFIGS))
def test_runner_fused_head_and_advance_decode_as_eager(family):
    """The runner's decode step with the fused head and advance (as CUDA without compile
    takes them; set by hand off the GPU, where the runner keeps the eager ones) gives the
    eager step's tokens, logits and done flags, past Gemma 3's ring of 8 and with an EOS
    the model emits mid-run."""
    model = _model(family, **CONFIGS[family])
    prompts = prompts_of([7, 1, 4], seed=2)
    new = 10
    eager, fused = runner_for(model, prompts, new), runner_for(model, prompts, new)
    if GPU:
        assert (fused.head, fused.advance) == (bookkeeping.step_head, bookkeeping.advance)
        eager.head, eager.advance = _step_head, _advance
    else:
        assert (fused.head, fused.advance) == (_step_head, _advance)
        fused.head, fused.advance = bookkeeping.step_head, bookkeeping.advance
    _, ids, _ = _decode(eager, prompts, new, -1)  # on CUDA the next EOS captures the step again
    eos = ids[1, max(map(len, prompts)) + 2].item()  # sequence 1's third new token
    want_logits, want_ids, want_done = _decode(eager, prompts, new, eos)
    assert want_done[1]
    got_logits, got_ids, got_done = _decode(fused, prompts, new, eos)
    assert torch.equal(got_ids, want_ids)
    assert torch.equal(got_done, want_done)
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-4, atol=1e-4)
