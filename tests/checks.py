"""Assertions shared by test files (fixtures are in conftest.py)."""


def assert_one_line_error(code, err, *needles):
    """A user error: exit 2, one `error:` line on stderr naming each needle, no traceback."""
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    flat = " ".join(err.split())
    for n in needles:
        assert str(n) in flat, (n, err)
