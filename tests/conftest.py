"""Options, markers and fixtures shared by every test file.

`pytest --device cuda` (default cpu) runs the device-dependent tests on the GPU as well:
the `device` fixture, the `each_device` marker (the test runs on cpu, then on the chosen
GPU) and `run_options.DEVICE` / `run_options.GPU` for module-level code (parametrize
lists, tolerances, skip conditions).
`make test-fast` leaves out the tests marked `real` (real weights), `interpreter`
(Triton's CPU interpreter, or a fresh Python interpreter) and `slow` (slow tests, and the
cases of parametrized cross products beyond a covering set: tests/tiers.py).
"""

import sys

import pytest

import run_options

# Imported before any test module: tpa_compress sets OMP_WAIT_POLICY=PASSIVE, which only
# works if it happens before torch is first imported (see tpa_compress/__init__.py).
import tpa_compress  # noqa: F401


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default="cpu",
        help="device for the device-dependent tests: cpu (default), "
        "cuda, cuda:N; with a CUDA device they also run the CUDA-graph / kernel paths",
    )


def pytest_configure(config):
    device = config.getoption("--device")
    if device != "cpu" and device != "cuda" and not device.startswith("cuda:"):
        raise pytest.UsageError(f"--device {device!r} is not valid; valid: cpu, cuda, cuda:N")
    run_options.DEVICE = device
    run_options.GPU = device.startswith("cuda")


# torch's thread count when the run started (`real` tests keep it: full-size matmuls gain
# from every core)
_THREADS = []


def pytest_generate_tests(metafunc):
    """`@pytest.mark.each_device`: the test's `device` is cpu, then the --device GPU if any."""
    if metafunc.definition.get_closest_marker("each_device"):
        metafunc.parametrize("device", ["cpu"] + ([run_options.DEVICE] if run_options.GPU else []))


@pytest.fixture(autouse=True)
def torch_threads(request):
    """One CPU thread for every test but the `real` ones: the tiny models' matmuls are far
    too small to split, and waking a second OpenMP thread for each of them costs more than
    the work, hundreds of times more when the cores are shared with other jobs. Set before
    each test because the CLI sets its own count (`--threads`, default every core)."""
    import torch

    if not _THREADS:
        _THREADS.append(torch.get_num_threads())
    want = _THREADS[0] if request.node.get_closest_marker("real") else 1
    if torch.get_num_threads() != want:
        torch.set_num_threads(want)


@pytest.fixture(scope="session")
def device() -> str:
    """The device chosen with --device."""
    return run_options.DEVICE


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny random Llama as a Hugging Face folder with a one-character-per-token tokenizer."""
    from tiny import char_tokenizer, random_state, tiny_config
    from tpa_compress.save import save_hf_folder

    cfg = tiny_config("llama")
    d = tmp_path_factory.mktemp("tiny") / "orig"
    d.mkdir()
    save_hf_folder(d, cfg, random_state(cfg, 3), char_tokenizer())
    return d


@pytest.fixture
def cli_run(monkeypatch, capsys):
    """Run `tpa-compress ARGS...` in this process; returns (exit code, stdout, stderr)."""
    from tpa_compress import cli

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["tpa-compress", *map(str, args)])
        with pytest.raises(SystemExit) as e:
            cli.main()
        got = capsys.readouterr()
        return e.value.code, got.out, got.err

    return run
