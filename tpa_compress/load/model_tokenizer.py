"""The tokenizer a loaded model reads text with, and the BOS its windows start with.

- `read_tokenizer(path)`: `--tokenizer PATH`, a SentencePiece tokenizer.model, a
  tokenizer.json (special tokens from the config files beside it), or a folder with
  either (tokenizer.json first). Anything else is a one-line error naming the path.
- `fit_tokenizer(ckpt)`: a tokenizer whose vocabulary has more tokens than the model
  has embedding rows is refused (its ids would index past the table; tokens added on
  top, such as Gemma's <image_soft_token>, are not counted). BOS: a family trained with
  BOS first in every sequence (`Family.bos_from_config`: Gemma) gets its config's
  `bos_token_id`, added, whatever the tokenizer file says (a bare tokenizer.json names
  none, and Gemma without BOS scores perplexity 70 where it scores 26.5 with it). Other
  models keep the tokenizer's rule; a tokenizer that names no BOS borrows the config's
  id, so `--bos yes` can add it.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import TPAError
from .sentencepiece_file import tokenizer_from_sentencepiece
from .tokenizer import TextTokenizer, read_json, tokenizer_from_json

VALID = "a tokenizer.model (SentencePiece), a tokenizer.json, or a folder holding one"


def tokenizer_from_folder(folder: Path) -> TextTokenizer | None:
    """tokenizer.json, else a SentencePiece tokenizer.model (gemma_pytorch's), else None."""
    folder = Path(folder)
    file = folder / "tokenizer.json"
    if not file.is_file():
        if not (folder / "tokenizer.model").is_file():
            return None
        sp = tokenizer_from_sentencepiece(folder / "tokenizer.model")
        meta_file = folder / "tokenizer_meta.json"
        if meta_file.is_file():  # our own save()
            m = read_json(meta_file)
            sp.bos_id, sp.eos_id, sp.pad_id, sp.add_bos = (
                m.get("bos_id"),
                m.get("eos_id"),
                m.get("pad_id"),
                bool(m.get("add_bos")),
            )
        return sp
    return tokenizer_from_json(file)


def read_tokenizer(path: str | Path) -> TextTokenizer:
    p = Path(path)
    if not p.exists():
        raise TPAError(f"--tokenizer {p}: no such file or directory; valid: {VALID}")
    if p.is_dir():
        tok = tokenizer_from_folder(p)
        if tok is None:
            raise TPAError(f"--tokenizer {p}: the folder holds no tokenizer.json or tokenizer.model; valid: {VALID}")
        return tok
    if p.suffix == ".json":
        return tokenizer_from_json(p)
    if p.suffix == ".model":
        return tokenizer_from_sentencepiece(p)
    raise TPAError(f"--tokenizer {p}: unknown tokenizer file (suffix {p.suffix or 'none'}); valid: {VALID}")


def fit_tokenizer(ckpt, source: str | None = None) -> None:
    """Check `ckpt.tokenizer` against the model and set its BOS rule (see the module doc).
    `source`: where the tokenizer came from, for errors (default: beside the model)."""
    tok, cfg = ckpt.tokenizer, ckpt.config
    where = source or f"the tokenizer of {ckpt.path}"
    if tok.base_vocab_size > cfg.vocab_size:
        raise TPAError(
            f"{where}: {tok.base_vocab_size} tokens do not fit {ckpt.path}, whose embedding has "
            f"{cfg.vocab_size} rows; valid: the tokenizer the model was trained with "
            f"(at most {cfg.vocab_size} tokens)"
        )
    bos = cfg.bos_token_id
    if bos is not None and not 0 <= bos < cfg.vocab_size:
        raise TPAError(f"{ckpt.path}: bos_token_id {bos} is outside the vocabulary (0..{cfg.vocab_size - 1})")
    if cfg.family_spec.bos_from_config and bos is not None:
        tok.bos_id, tok.add_bos = bos, True
    elif tok.bos_id is None:
        tok.bos_id = bos
    if hasattr(tok, "hf_class"):  # a tokenizer.model: transformers reads Gemma's with GemmaTokenizer
        tok.hf_class = cfg.family_spec.sentencepiece_class


def bos_for(tok: TextTokenizer, choice: str, where: str) -> int | None:
    """The BOS id each window starts with for `--bos auto|yes|no` (None: no BOS).
    `yes` with no known BOS id is an error, never a silent no."""
    if choice == "no":
        return None
    if choice == "auto":  # as the tokenizer (a Gemma model: its config) says
        return tok.bos_id if tok.add_bos else None
    if tok.bos_id is None:
        raise TPAError(
            f"--bos {choice}: neither {where}'s config nor its tokenizer names a BOS token; "
            "valid here: --bos no, or --tokenizer with one that names its BOS"
        )
    return tok.bos_id
