"""A SentencePiece tokenizer.model rebuilt from a GGUF, for tests: no real Gemma
tokenizer.model ships with the project, but its data does.

A GGUF whose `tokenizer.ggml.model` is "llama" carries a tokenizer.model's pieces,
scores and piece types as llama.cpp's converter copied them (llama.cpp's token types are
SentencePiece's enum). This writes them back with SentencePiece's own protobuf schema
(`sentencepiece_model_pb2`), undoing the converter's one respelling: it writes
user-defined whitespace pieces with real spaces where the model has "▁". llama.cpp types
UNK as control; SentencePiece needs it as UNKNOWN. The flags a GGUF does not carry are
Gemma's: BPE with byte fallback, digits split, no dummy prefix (the GGUF's
add_space_prefix = false), whitespace kept as is and escaped to "▁".
"""

from __future__ import annotations

from pathlib import Path

_UNKNOWN = 2
_SPACE = "\u2581"


def sentencepiece_model_from_gguf(gguf_path: Path, out: Path) -> Path:
    from sentencepiece import sentencepiece_model_pb2 as pb

    from tpa_compress.load.gguf_reader import GGUFFile

    r = GGUFFile(str(gguf_path))
    field = lambda k: r.fields[k].contents()  # noqa: E731
    assert field("tokenizer.ggml.model") == "llama", "only SentencePiece data can be written back"
    assert field("tokenizer.ggml.add_space_prefix") is False
    unk = field("tokenizer.ggml.unknown_token_id")
    m = pb.ModelProto()
    for i, (piece, score, kind) in enumerate(
        zip(field("tokenizer.ggml.tokens"), field("tokenizer.ggml.scores"), field("tokenizer.ggml.token_type"))
    ):
        p = m.pieces.add()
        p.piece = _SPACE * len(piece) if " " in piece and not piece.strip() else piece
        p.score = score
        p.type = _UNKNOWN if i == unk else kind
    t = m.trainer_spec
    t.model_type = pb.TrainerSpec.BPE
    t.vocab_size = len(m.pieces)
    t.byte_fallback = True
    t.split_digits = True
    t.allow_whitespace_only_pieces = True
    for name in ("bos", "eos", "pad", "unk"):  # SentencePiece finds a special id by its piece
        i = field(f"tokenizer.ggml.{'unknown' if name == 'unk' else 'padding' if name == 'pad' else name}_token_id")
        setattr(t, f"{name}_id", i)
        setattr(t, f"{name}_piece", m.pieces[i].piece)
    n = m.normalizer_spec
    n.name, n.add_dummy_prefix, n.remove_extra_whitespaces, n.escape_whitespaces = "identity", False, False, True
    out.write_bytes(m.SerializeToString())
    return out


def train_tiny_sentencepiece(folder: Path, vocab_size: int = 90, **options) -> Path:
    """A real SentencePiece BPE model trained on a few sentences (vocabulary `vocab_size`,
    <unk> 0, <s> 1, </s> 2 unless `options` say otherwise, e.g. bos_id=-1): for plumbing
    tests on tiny models."""
    import sentencepiece as spm

    text = folder / "spm_train.txt"
    text.write_text(
        "\n".join(f"the quick brown fox {i} jumps over the lazy dog; hello world number {i}." for i in range(200))
        + "\n"
    )
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(folder / "tokenizer"),
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        minloglevel=2,
        **options,
    )
    return folder / "tokenizer.model"
