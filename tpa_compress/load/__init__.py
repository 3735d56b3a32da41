"""Load a model from any of the formats users have, into one representation.

`load_model(path)` returns a `Checkpoint`: a `ModelConfig`, a lazy `WeightSource`
(tensors are read on demand, memory-mapped where the format allows, so a model is
never held twice) and the tokenizer. The format is picked from the path:

- `*.gguf`                      -> load/gguf.py  (every registered family: `gemma3`, `llama`, `qwen2`)
- a folder with `config.json`   -> load/hf.py    (safetensors, single or sharded)
- `*.ckpt` / `*.pt` / `*.pth`   -> load/ckpt.py  (gemma_pytorch `model_state_dict`; tokenizer.model beside it)
- nothing / "default"           -> the embedded Gemma 3 270M (load/default.py)
"""

from .source import Checkpoint, WeightSource, load_model

__all__ = ["Checkpoint", "WeightSource", "load_model"]
