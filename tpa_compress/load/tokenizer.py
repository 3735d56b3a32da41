"""The model's real tokenizer, as a `tokenizers.Tokenizer`, from GGUF metadata or a folder.

A GGUF has no `tokenizer.json`: it stores the vocabulary (+ scores, token types,
sometimes merges) under llama.cpp's keys. We rebuild the tokenizer that
transformers builds from the same file (integrations/gguf/gguf_tokenizer_mapping.py),
so token ids match it exactly, but with the `tokenizers` API directly, because
transformers needs ~80 s for Gemma's 262k vocabulary and this needs a few.

`tokenizer.ggml.model` picks the kind:
- "llama": sentencepiece-style BPE with byte fallback. Gemma architectures get
  GemmaTokenizer's shape, other architectures LlamaTokenizer's (Metaspace).
- "gpt2": byte-level BPE with the merges from the file.

BOS is prepended by `TextTokenizer.encode`, never by a post-processor, so one
switch (`add_bos`) controls it whatever the source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from ..errors import TPAError

SUPPORTED_MODELS = ("gpt2", "llama")
_GEMMA_ARCHS = ("gemma", "gemma2", "gemma3")
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types
_SPACE = "\u2581"  # sentencepiece's visible space "▁"

# Byte-level files split text by `tokenizer.ggml.pre` before merging. transformers knows
# these regexes (besides GPT-2's own, its fallback for every other name, "smollm" too).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2's split (transformers' Qwen2Tokenizer.PRETOKENIZE_REGEX): digits one at a time
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_SPLITS = {
    **dict.fromkeys(
        (
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
            "dbrx",
            "smaug-bpe",
        ),
        _LLAMA3_SPLIT,
    ),
    "tekken": _TEKKEN_SPLIT,
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"), _QWEN2_SPLIT),
}
# transformers splits these with regexes of models whose architectures we do not load;
# refuse them rather than tokenize differently.
_UNSUPPORTED_PRES = ("qwen35", "gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2")


@dataclass
class TextTokenizer:
    tok: Tokenizer
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    add_bos: bool

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        return ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    @property
    def base_vocab_size(self) -> int:
        """Tokens of the model's vocabulary proper: Google's Gemma 3 1B tokenizer.json adds
        <image_soft_token> past the 262144 embedding rows of the text-only model."""
        return self.tok.get_vocab_size(with_added_tokens=False)

    def save(self, folder: str | Path) -> None:
        """tokenizer.json + tokenizer_config.json for transformers (`AutoTokenizer` gives the
        ids `encode` gives, BOS included exactly when `add_bos`), and tokenizer_meta.json,
        which `tokenizer_from_folder` reads back first."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.hf_tokenizer().save(str(folder / "tokenizer.json"))
        (folder / "tokenizer_config.json").write_text(json.dumps(self.hf_config(), indent=2) + "\n")
        meta = {"bos_id": self.bos_id, "eos_id": self.eos_id, "pad_id": self.pad_id, "add_bos": self.add_bos}
        (folder / "tokenizer_meta.json").write_text(json.dumps(meta, indent=2) + "\n")

    def hf_tokenizer(self) -> Tokenizer:
        """A copy whose post-processor adds BOS iff this tokenizer does: transformers
        encodes with special tokens by default, and Gemma without its BOS is junk. An
        existing post-processor that already agrees (e.g. Llama 3's) is kept."""
        tok = Tokenizer.from_str(self.tok.to_str())
        probe = "a b"
        if tok.encode(probe).ids != self.encode(probe):
            tok.post_processor = None
            if self.add_bos and self.bos_id is not None:
                bos = tok.id_to_token(self.bos_id)
                tok.post_processor = processors.TemplateProcessing(
                    single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, self.bos_id)]
                )
        return tok

    def hf_config(self) -> dict:
        """tokenizer_config.json: transformers' generic fast tokenizer over tokenizer.json
        (the class does not depend on config.json, whose model_type may be ours), the
        special tokens by name, and the BOS flag that its newer versions rebuild the
        post-processor from."""
        name = lambda i: None if i is None else self.tok.id_to_token(i)  # noqa: E731
        return {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": name(self.bos_id),
            "eos_token": name(self.eos_id),
            "pad_token": name(self.pad_id),
            "add_bos_token": bool(self.add_bos and self.bos_id is not None),
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
        }


# --------------------------------------------------------------------------- GGUF


def _field(reader, key: str):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def _token_id(reader, key: str, n_tokens: int, path: str) -> int | None:
    value = _field(reader, key)
    if value is None:
        return None
    if not 0 <= int(value) < n_tokens:
        raise TPAError(f"{path}: GGUF metadata {key} = {value} is outside the vocabulary (0..{n_tokens - 1})")
    return int(value)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, which byte-level vocabularies are spelled in."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def derive_merges(vocab: dict[str, int], score: dict[str, float]) -> list[tuple[str, str]]:
    """The merges a merge-less vocabulary implies, in transformers' `generate_merges` order.

    Every split of a token into two halves that are both tokens is a merge. Merges
    rank by the merged token's score (best first), then the longer left half, then
    the longer right half; exact ties keep vocabulary order. Building them token by
    token in score order already gives that order unless scores tie, so the costly
    sort of all merges only runs then.
    """
    ranked = sorted(score, key=score.__getitem__, reverse=True)  # stable: ties keep file order
    merges = [(t[:i], t[i:]) for t in ranked for i in range(len(t) - 1, 0, -1) if t[:i] in vocab and t[i:] in vocab]
    if len(set(score.values())) < len(score):
        merges.sort(key=lambda m: (-score[m[0] + m[1]], -len(m[0]), -len(m[1])))
    return merges


def tokenizer_from_gguf(reader, path: str) -> TextTokenizer:
    kind = _field(reader, "tokenizer.ggml.model")
    if kind not in SUPPORTED_MODELS:
        raise TPAError(f"{path}: unsupported tokenizer.ggml.model {kind!r}; supported: {', '.join(SUPPORTED_MODELS)}")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    if not tokens:
        raise TPAError(f"{path}: GGUF metadata tokenizer.ggml.tokens is missing or empty")
    n = len(tokens)
    types = _field(reader, "tokenizer.ggml.token_type") or [1] * n
    if len(types) != n:
        raise TPAError(f"{path}: tokenizer.ggml.token_type has {len(types)} entries for {n} tokens")
    merges = _field(reader, "tokenizer.ggml.merges")
    if merges is not None:
        merges = [tuple(m.split(" ", 1)) for m in merges]
    arch = _field(reader, "general.architecture")
    ids = {k: _token_id(reader, f"tokenizer.ggml.{k}_token_id", n, path) for k in ("bos", "eos", "unknown", "padding")}

    if kind == "gpt2":
        pre = _field(reader, "tokenizer.ggml.pre")
        if pre in _UNSUPPORTED_PRES:
            raise TPAError(
                f"{path}: unsupported tokenizer.ggml.pre {pre!r}; supported: "
                f"{', '.join(sorted(_PRE_SPLITS))}, or a name using GPT-2's split (e.g. 'smollm')"
            )
        tok, spelled = _byte_level(tokens, merges, _PRE_SPLITS.get(pre))
    else:
        if arch in _GEMMA_ARCHS:
            # Gemma stores multi-space tokens as real spaces, but its normalizer turns
            # spaces into "▁" before lookup: respell them so they can match.
            spelled = [_SPACE * len(t) if " " in t and not t.strip() else t for t in tokens]
            # Gemma's scores do not follow its merge order; the file order does.
            score = {t: -i for i, t in enumerate(spelled)}
        else:
            spelled = tokens
            scores = _field(reader, "tokenizer.ggml.scores")
            if merges is None and (scores is None or len(scores) != n):
                raise TPAError(
                    f"{path}: tokenizer.ggml.scores is missing or has the wrong length "
                    "(needed to derive merges for a 'llama' tokenizer)"
                )
            score = dict(zip(spelled, scores)) if merges is None else {}
        unk = tokens[ids["unknown"]] if ids["unknown"] is not None else "<unk>"
        tok = _sentencepiece_bpe(spelled, merges, score, unk, gemma=arch in _GEMMA_ARCHS)

    _add_file_tokens(tok, tokens, types, set(spelled), ids, byte_level=kind == "gpt2")
    add_bos = _field(reader, "tokenizer.ggml.add_bos_token")
    if add_bos is None:  # older sentencepiece files lack the flag; llama.cpp adds BOS there
        add_bos = kind == "llama"
    return TextTokenizer(tok, ids["bos"], ids["eos"], ids["padding"], bool(add_bos))


def _sentencepiece_bpe(spelled, merges, score, unk: str, gemma: bool) -> Tokenizer:
    vocab = {t: i for i, t in enumerate(spelled)}
    if merges is None:
        merges = derive_merges(vocab, score)
    tok = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            unk_token=unk if unk in vocab else None,
            fuse_unk=True,
            byte_fallback=True,
            dropout=None,
        )
    )
    text_decoders = [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if gemma:  # GemmaTokenizer: every space becomes "▁", no prefix space, split after each space
        tok.normalizer = normalizers.Replace(" ", _SPACE)
        tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
        tok.decoder = decoders.Sequence(text_decoders)
    else:  # LlamaTokenizer (non-legacy): "▁" prepended to the first word only, stripped on decode
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="first", split=False)
        tok.decoder = decoders.Sequence([*text_decoders, decoders.Strip(content=" ", left=1)])
    return tok


def _byte_level(tokens, merges, split: str | None):
    table = _bytes_to_unicode()
    alphabet = set(table.values())
    # Tokens are normally already in GPT-2's byte alphabet; respell any that are not.
    spelled = [t if set(t) <= alphabet else "".join(table[b] for b in t.encode("utf-8")) for t in tokens]
    vocab = {t: i for i, t in enumerate(spelled)}
    tok = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges or [],
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            dropout=None,
        )
    )
    if split is not None:  # split by the file's regex, then only map bytes
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:  # GPT-2's own split regex
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok, spelled


def _add_file_tokens(tok, tokens, types, vocab: set[str], ids: dict, byte_level: bool) -> None:
    """Control tokens (and the named bos/eos/unk/pad) become special tokens and
    user-defined ones plain added tokens, so text containing them keeps them whole.

    A byte-level "control" token written outside the byte alphabet is a llama.cpp
    mislabel and is skipped, as transformers does. A user-defined token is only
    added under a spelling the vocabulary has (Gemma's respelled spaces are not).
    """
    alphabet = set(_bytes_to_unicode().values()) if byte_level else None
    special = {t for t, ty in zip(tokens, types) if ty == _CONTROL and (alphabet is None or set(t) <= alphabet)}
    special |= {tokens[i] for i in ids.values() if i is not None}
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens if t in special])
    user = [t for t, ty in zip(tokens, types) if ty == _USER_DEFINED and t in vocab]
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])


# --------------------------------------------------------------------------- folder


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TPAError(f"{path}: cannot read JSON ({type(e).__name__}: {e})") from e


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def tokenizer_from_json(file: Path) -> TextTokenizer:
    """A tokenizer.json; its special tokens from tokenizer_meta.json (our save) or the
    Hugging Face config files beside it."""
    folder = file.parent
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as e:
        raise TPAError(
            f"{file}: not a valid tokenizers file ({type(e).__name__}: {e}); valid: a tokenizer.json "
            "as the tokenizers library writes it, a tokenizer.model, or a Hugging Face folder"
        ) from e

    meta_file = folder / "tokenizer_meta.json"
    if meta_file.is_file():  # our own save()
        m = read_json(meta_file)
        return TextTokenizer(tok, m.get("bos_id"), m.get("eos_id"), m.get("pad_id"), bool(m.get("add_bos")))

    # A Hugging Face folder: special tokens by name in tokenizer_config.json, else
    # special_tokens_map.json.
    cfg = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
        if (folder / name).is_file():
            cfg.update(read_json(folder / name))

    def token_id(key: str) -> int | None:
        text = _token_text(cfg.get(key))
        return None if text is None else tok.token_to_id(text)

    bos = token_id("bos_token")
    add_bos = cfg.get("add_bos_token")
    if add_bos is None:
        # Recent transformers (and e.g. Llama 3) put BOS in the post-processor instead of
        # a flag: see whether it adds one. We add it ourselves, so we keep only the fact.
        added = tok.encode("", add_special_tokens=True).ids
        add_bos = bos is not None and added[:1] == [bos]
    return TextTokenizer(tok, bos, token_id("eos_token"), token_id("pad_token"), bool(add_bos))
