"""Per-step logit error of each decode backend on test_cuda_decode's latent gemma3 model
(sink 1): are the tokens the same across backends, and at which step does the error peak?"""
import copy
import sys

sys.path.insert(0, "tests")
import run_options

run_options.DEVICE, run_options.GPU = "cuda", True
import torch
from test_cuda_decode import latent_model
from test_runtime_sink import greedy_steps, prompts_of
from tpa_compress.runtime import Runner, cuda_decode

model = latent_model("gemma3", 1)
ref_model = copy.deepcopy(model).float()
prompts = prompts_of([13, 1, 20])
longest, new = max(map(len, prompts)), 16
for name, kw in [("triton", {}), *[(k, {"cuda_build": cuda_decode.CudaBuild(kernel=k)}) for k in ("wg", "warp", "tile")]]:
    r = Runner(model, len(prompts), longest + new, attention="cuda" if kw else "triton", compile=False, **kw)
    got, gen = greedy_steps(r, prompts, new)
    got = got.float()
    for b, pr in enumerate(prompts):
        with torch.no_grad():
            ref = ref_model.logits(ref_model(torch.tensor([pr + gen[b]], device="cuda")))[0]
        ref = ref[len(pr) - 1 : len(pr) - 1 + new]
        e = ((got[b] - ref).abs().amax(-1) / ref.abs().max()).tolist()
        print(name, b, gen[b], " ".join(f"{x:.3f}" for x in e))
