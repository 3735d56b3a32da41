"""A SentencePiece `tokenizer.model` (gemma_pytorch ships one beside `model.ckpt`), read
and run by the `sentencepiece` library itself, so ids are the ones the model was
trained with, not a re-implementation's.

The file names BOS/EOS/PAD/UNK ids (`trainer_spec`; -1 = none) but not whether BOS is
prepended: SentencePiece leaves that to the caller. Like llama.cpp for sentencepiece
files without the flag, a file that names a BOS gets it added; a Gemma model takes its
BOS from its config in any case (load/model_tokenizer.py).

Control pieces (<bos>, <start_of_turn> ...) are never produced from text, as in
SentencePiece; `decode(skip_special=False)` spells them out.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import TPAError
from .tokenizer import TextTokenizer


class SentencePieceTokenizer(TextTokenizer):
    """TextTokenizer over a `sentencepiece.SentencePieceProcessor` (in `tok`). `hf_class`:
    the transformers class that reads the saved tokenizer.model (set for Gemma models by
    load/model_tokenizer.py; None: tokenizer_config.json names none)."""

    hf_class: str | None = None

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        ids = list(self.tok.encode(text))
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        return ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        out, run = [], []
        for i in map(int, ids):
            if self.tok.is_control(i):
                out.append(self.tok.decode(run))
                run = []
                if not skip_special:
                    out.append(self.tok.id_to_piece(i))
            else:
                run.append(i)
        return "".join(out) + self.tok.decode(run)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_piece_size()

    base_vocab_size = vocab_size

    def save(self, folder: str | Path) -> None:
        """tokenizer.model (the file's bytes, unchanged), tokenizer_meta.json (read back
        first by `tokenizer_from_folder`) and tokenizer_config.json naming the special tokens."""
        import json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tokenizer.model").write_bytes(self.tok.serialized_model_proto())
        (folder / "tokenizer_config.json").write_text(json.dumps(self.hf_config(), indent=2) + "\n")
        meta = {"bos_id": self.bos_id, "eos_id": self.eos_id, "pad_id": self.pad_id, "add_bos": self.add_bos}
        (folder / "tokenizer_meta.json").write_text(json.dumps(meta, indent=2) + "\n")

    def hf_tokenizer(self):
        raise TPAError("a SentencePiece tokenizer has no tokenizer.json form here; it is saved as tokenizer.model")

    def hf_config(self) -> dict:
        name = lambda i: None if i is None else self.tok.id_to_piece(i)  # noqa: E731
        cls = {"tokenizer_class": self.hf_class} if self.hf_class else {}
        return {
            **cls,
            "bos_token": name(self.bos_id),
            "eos_token": name(self.eos_id),
            "pad_token": name(self.pad_id),
            "add_bos_token": bool(self.add_bos and self.bos_id is not None),
            "add_eos_token": False,
        }


def tokenizer_from_sentencepiece(path: str | Path) -> SentencePieceTokenizer:
    path = Path(path)
    try:
        import sentencepiece as spm
    except ImportError as e:
        raise TPAError(
            f"{path}: reading a SentencePiece tokenizer.model needs the sentencepiece package; "
            "install it (pip install 'tpa-compress[models]' or pip install sentencepiece), or pass "
            "--tokenizer with a tokenizer.json"
        ) from e
    try:
        proc = spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TPAError(
            f"{path}: not a readable SentencePiece model ({reason}); valid: a tokenizer.model "
            "as SentencePiece writes it, a tokenizer.json, or a Hugging Face folder"
        ) from e
    n = proc.get_piece_size()
    if n == 0:
        raise TPAError(f"{path}: SentencePiece model has no pieces")

    def special(i: int) -> int | None:
        return i if 0 <= i < n else None

    bos = special(proc.bos_id())
    return SentencePieceTokenizer(proc, bos, special(proc.eos_id()), special(proc.pad_id()), bos is not None)
