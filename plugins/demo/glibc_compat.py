"""Let the prebuilt llama.cpp libraries of ``llama-cpp-py-sync`` load on glibc 2.34-2.37.

Why: its Linux wheels are tagged manylinux2014 but were linked on a glibc of
2.38 or later, so on Debian 12 (glibc 2.36) ``dlopen`` refuses them with
"version 'GLIBC_2.38' not found". The only symbols they take from 2.38 are
the C23 aliases ``__isoc23_strtol``, ``__isoc23_strtoul``,
``__isoc23_strtoull`` and ``__isoc23_sscanf``, which differ from the classic
functions only in also reading ``0b`` binary literals (llama.cpp parses
decimal and hex numbers with them).

:func:`patch_library` rewrites a copy of such a library, never the
installed file: each imported ``__isoc23_X`` symbol is pointed at the
``X`` that ends the same name string (its name offset moves past the
prefix), bound to libc's base version GLIBC_2.2.5, and the then unused
GLIBC_2.38 requirement is marked weak, so the loader no longer insists on
it. A library that needs any other 2.38 symbol is refused
(:class:`GlibcPatchError`): the patch never guesses. No compiler and no
third-party tool; a few hundred microseconds per file.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["C23_PREFIX", "NEWEST_GLIBC", "GlibcPatchError", "glibc_version", "patch_library"]

#: Imported symbols with this prefix are the only GLIBC_2.38 ones the patch re-points.
C23_PREFIX = b"__isoc23_"
#: The glibc version whose requirement the patch removes.
NEWEST_GLIBC = b"GLIBC_2.38"
_BASE_GLIBC = b"GLIBC_2.2.5"
_VER_FLG_WEAK = 0x2
_SHT_DYNSYM, _SHT_VERNEED, _SHT_VERSYM = 11, 0x6FFFFFFE, 0x6FFFFFFF


class GlibcPatchError(RuntimeError):
    """The library is not one the patch can make loadable."""


def glibc_version() -> tuple[int, int] | None:
    """This process's glibc as (major, minor), or None off glibc."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return None
    name, _, version = text.partition(" ")
    if name != "glibc":
        return None
    major, _, minor = version.partition(".")
    return int(major), int(minor.split(".")[0] or 0)


@dataclass
class _Section:
    kind: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int


def _sections(data: bytearray) -> list[_Section]:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise GlibcPatchError("not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    entsize, count = struct.unpack_from("<HH", data, 0x3A)
    found = []
    for i in range(count):
        fields = struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * entsize)
        found.append(_Section(fields[1], fields[4], fields[5], fields[6], fields[7], fields[9]))
    return found


def _text(data: bytearray, offset: int) -> bytes:
    return bytes(data[offset : data.index(b"\0", offset)])


def _needed_versions(
    data: bytearray, verneed: _Section, strings: int
) -> dict[bytes, tuple[int, int]]:
    """libc's required versions: name -> (version index, offset of its aux entry)."""
    found: dict[bytes, tuple[int, int]] = {}
    offset = verneed.offset
    for _ in range(verneed.info):
        _, count, file_name, aux, following = struct.unpack_from("<HHIII", data, offset)
        entry = offset + aux
        for _ in range(count):
            _, _, index, name, step = struct.unpack_from("<IHHII", data, entry)
            if _text(data, strings + file_name) == b"libc.so.6":
                found[_text(data, strings + name)] = (index, entry)
            entry += step
        if not following:
            break
        offset += following
    return found


def patch_library(path: Path) -> list[str]:
    """Rewrite ``path`` in place (give it a copy) so it loads without GLIBC_2.38;
    returns the re-pointed symbols (empty when there was nothing to do)."""
    data = bytearray(path.read_bytes())
    sections = _sections(data)
    try:
        dynsym = next(s for s in sections if s.kind == _SHT_DYNSYM)
        versym = next(s for s in sections if s.kind == _SHT_VERSYM)
        verneed = next(s for s in sections if s.kind == _SHT_VERNEED)
    except StopIteration:
        return []  # no symbol versions: nothing asks for 2.38
    strings = sections[dynsym.link].offset
    versions = _needed_versions(data, verneed, strings)
    if NEWEST_GLIBC not in versions:
        return []
    if _BASE_GLIBC not in versions:
        raise GlibcPatchError(f"{path.name} needs no {_BASE_GLIBC.decode()} to bind to")
    newest, aux_entry = versions[NEWEST_GLIBC]
    base = versions[_BASE_GLIBC][0]
    moved, other = [], []
    for i in range(dynsym.size // dynsym.entsize):
        symbol = dynsym.offset + i * dynsym.entsize
        version = versym.offset + 2 * i
        if struct.unpack_from("<H", data, version)[0] & 0x7FFF != newest:
            continue
        (name,) = struct.unpack_from("<I", data, symbol)
        text = _text(data, strings + name)
        if not text.startswith(C23_PREFIX):
            other.append(text.decode())
            continue
        struct.pack_into("<I", data, symbol, name + len(C23_PREFIX))
        struct.pack_into("<H", data, version, base)
        moved.append(text.decode())
    if other:
        raise GlibcPatchError(
            f"{path.name} needs {', '.join(other)} from {NEWEST_GLIBC.decode()}: "
            "only the C23 string-to-number aliases can be re-pointed"
        )
    (flags,) = struct.unpack_from("<H", data, aux_entry + 4)
    struct.pack_into("<H", data, aux_entry + 4, flags | _VER_FLG_WEAK)
    path.write_bytes(data)
    return moved
