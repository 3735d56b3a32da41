"""This pytest run's options, for the module-level code of test files (parametrize lists,
tolerances): conftest.pytest_configure sets them from the command line before any test
module is imported. Tests that only need the device inside their body take the `device`
fixture instead."""

DEVICE = "cpu"  # pytest --device
GPU = False  # DEVICE is a CUDA device
