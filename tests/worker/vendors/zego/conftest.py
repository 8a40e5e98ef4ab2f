"""The emulator fixtures for the ZEGO client tests (harmless if tests/conftest.py also provides them)."""

from tests.emulator_fixture import emulator, emulator_factory  # noqa: F401
