"""What a person expects of the command line: --version, flags shown as flags, one line on Ctrl-C."""

import pytest

from tpa_compress import cli


def test_version(cli_run):
    from importlib.metadata import version

    code, out, _ = cli_run("--version")
    assert code == 0 and out.strip() == f"tpa-compress {version('tpa-compress')}"


@pytest.mark.parametrize("command", ["convert", "eval", "generate", "validate", "analyze"])
def test_help_shows_flags_as_flags_and_every_option_has_help(cli_run, command):
    code, out, _ = cli_run(command, "--help")
    assert code == 0
    assert "<bool>" not in out
    import typer.main

    cmd = typer.main.get_command(cli.app).commands[command]
    options = [p for p in cmd.params if p.param_type_name == "option"]
    assert options
    for p in options:
        assert p.help, f"{command} {p.opts[0]} has no help text"
        if "--device" in p.opts:
            assert p.default == "auto", f"{command} --device defaults to {p.default}"


def test_ctrl_c_prints_one_line(cli_run, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", boom)
    code, _, err = cli_run("convert")
    assert code == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted: convert stopped; nothing was written" in lines[0]
