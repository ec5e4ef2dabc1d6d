"""The polyrlm pytest plugin (entry point ``pytest11``), loaded by pytest
wherever polyrlm is installed. It adds ``--polyrlm-backends`` and
parametrizes the ``polyrlm_backend`` fixture of the contract suite.

Kept light: nothing heavy is imported unless a test asks for a backend.
"""

from __future__ import annotations

import pytest

__all__ = ["pytest_addoption", "pytest_generate_tests"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--polyrlm-backends",
        default=None,
        help="comma-separated backends for the polyrlm contract suite (default: every available)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "polyrlm_backend" not in metafunc.fixturenames:
        return
    chosen = metafunc.config.getoption("--polyrlm-backends")
    if chosen:
        names = [n.strip() for n in chosen.split(",") if n.strip()]
    else:
        from polyrlm.registry import get_registry

        names = [n for n, spec in get_registry().specs().items() if spec.available]
    metafunc.parametrize("polyrlm_backend", names)
