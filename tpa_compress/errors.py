"""User-facing errors: one line, naming the file/key/value and what would be valid.

The CLI catches `TPAError`, prints its message on one line and exits with code 2;
`--debug` shows the traceback instead.
"""


class TPAError(Exception):
    """A problem with the user's input (file, recipe, argument), not a bug."""

    exit_code = 2


def non_finite_error(dtype) -> TPAError:
    """A forward pass that produced inf/nan: never printed as a result. float16 overflows
    Gemma's activations (they exceed 65504), so say which dtypes work."""
    name = str(dtype).removeprefix("torch.")
    hint = "; float16 overflows this model's activations: use --dtype float32 or bfloat16" if name == "float16" else ""
    return TPAError(f"the forward pass produced inf/nan logits in {name}{hint}")
