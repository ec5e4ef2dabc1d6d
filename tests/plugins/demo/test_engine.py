"""The prebuilt engine: the glibc patch on a synthetic ELF file (always) and
on the real libraries, and the engine's server through litellm's real
``openai/`` provider with SmolLM2 (marked ``localmodel``)."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path
from typing import Any

import pytest

from polyrlm.plugins.demo.glibc_compat import (
    C23_PREFIX,
    NEWEST_GLIBC,
    GlibcPatchError,
    glibc_version,
    patch_library,
)

_SHDR = "<IIQQQQIIQQ"  # Elf64_Shdr
_VERNEED, _VERSYM, _DYNSYM, _STRTAB = 0x6FFFFFFE, 0x6FFFFFFF, 11, 3


def _elf(
    symbols: list[tuple[str, str]], needs: tuple[str, ...] = ("GLIBC_2.2.5", "GLIBC_2.38")
) -> bytes:
    """A minimal 64-bit ELF file: imported ``symbols`` as (name, glibc version),
    and a libc.so.6 version requirement for each of ``needs``."""
    strings = b"\0libc.so.6\0"
    offsets: dict[str, int] = {}
    for text in [name for name, _ in symbols] + list(needs):
        if text not in offsets:
            offsets[text] = len(strings)
            strings += text.encode() + b"\0"
    index = {v: 2 + i for i, v in enumerate(needs)}  # 0 and 1 are local and global
    dynsym = bytes(24) + b"".join(
        struct.pack("<IBBHQQ", offsets[name], 0x12, 0, 0, 0, 0) for name, _ in symbols
    )
    versym = struct.pack("<H", 0) + b"".join(struct.pack("<H", index[v]) for _, v in symbols)
    verneed = struct.pack("<HHIII", 1, len(needs), 1, 16, 0)
    for i, v in enumerate(needs):
        step = 16 if i + 1 < len(needs) else 0
        verneed += struct.pack("<IHHII", 0, 0, index[v], offsets[v], step)
    body = [(_STRTAB, strings, 0, 0, 0), (_DYNSYM, dynsym, 1, 1, 24), (_VERSYM, versym, 2, 0, 2)]
    body.append((_VERNEED, verneed, 1, 1, 0))
    data, headers = bytearray(64), [bytes(64)]
    for kind, blob, link, info, entsize in body:
        offset = len(data)
        data += blob
        headers.append(struct.pack(_SHDR, 0, kind, 0, 0, offset, len(blob), link, info, 8, entsize))
    shoff = len(data)
    data += b"".join(headers)
    data[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", data, 0x28, shoff)
    struct.pack_into("<HH", data, 0x3A, 64, len(headers))
    return bytes(data)


def _imports(path: Path) -> list[tuple[str, int]]:
    """(name, version index) of each symbol, read back without the patch's code."""
    data = path.read_bytes()
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    heads = [struct.unpack_from(_SHDR, data, shoff + 64 * i) for i in range(5)]
    strings, dynsym, versym = heads[1][4], heads[2], heads[3]
    found = []
    for i in range(1, dynsym[5] // 24):
        (name,) = struct.unpack_from("<I", data, dynsym[4] + 24 * i)
        (version,) = struct.unpack_from("<H", data, versym[4] + 2 * i)
        found.append((data[strings + name : data.index(b"\0", strings + name)].decode(), version))
    return found


def test_the_c23_aliases_are_repointed_to_the_classic_functions(tmp_path: Path) -> None:
    lib = tmp_path / "libx.so"
    names = ["__isoc23_strtol", "__isoc23_sscanf", "malloc"]
    lib.write_bytes(
        _elf([(names[0], "GLIBC_2.38"), (names[1], "GLIBC_2.38"), (names[2], "GLIBC_2.2.5")])
    )
    assert patch_library(lib) == names[:2]
    assert _imports(lib) == [("strtol", 2), ("sscanf", 2), ("malloc", 2)]
    assert _needs(lib) == {"GLIBC_2.2.5": 0, NEWEST_GLIBC.decode(): 2}  # 2.38 is weak now
    data = lib.read_bytes()
    assert patch_library(lib) == []  # twice is the same file
    assert lib.read_bytes() == data


def _needs(path: Path) -> dict[str, int]:
    """Each required glibc version's flags, read back from the verneed section."""
    data = path.read_bytes()
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    strings = struct.unpack_from(_SHDR, data, shoff + 64)[4]
    verneed = struct.unpack_from(_SHDR, data, shoff + 4 * 64)[4]
    count = struct.unpack_from("<HH", data, verneed)[1]
    found = {}
    for i in range(count):
        _, flags, _, name, _ = struct.unpack_from("<IHHII", data, verneed + 16 + 16 * i)
        found[data[strings + name : data.index(b"\0", strings + name)].decode()] = flags
    return found


def test_any_other_glibc_2_38_symbol_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    lib = tmp_path / "liby.so"
    blob = _elf([("__isoc23_strtol", "GLIBC_2.38"), ("strlcpy", "GLIBC_2.38")])
    lib.write_bytes(blob)
    with pytest.raises(GlibcPatchError, match=r"needs strlcpy from GLIBC_2\.38"):
        patch_library(lib)
    assert lib.read_bytes() == blob


def test_files_the_patch_has_nothing_to_do_with(tmp_path: Path) -> None:
    old = tmp_path / "libold.so"
    old.write_bytes(_elf([("strtol", "GLIBC_2.2.5")], needs=("GLIBC_2.2.5",)))
    assert patch_library(old) == []
    text = tmp_path / "notes.txt"
    text.write_text("not a library")
    with pytest.raises(GlibcPatchError, match="not a 64-bit little-endian ELF"):
        patch_library(text)
    assert C23_PREFIX == b"__isoc23_"
    version = glibc_version()
    assert version is None or version >= (2, 17)


def _engine_folder() -> Path:
    spec = importlib.util.find_spec("llama_cpp_py_sync")
    assert spec is not None and spec.submodule_search_locations, 'needs pip install ".[local]"'
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.mark.localmodel
def test_the_real_libraries_need_only_the_c23_aliases_from_glibc_2_38(tmp_path: Path) -> None:
    moved: set[str] = set()
    for lib in [_engine_folder() / "libllama.so", *_engine_folder().glob("libggml*.so*")]:
        copy = tmp_path / lib.name
        copy.write_bytes(lib.read_bytes())
        moved.update(patch_library(copy))
        assert patch_library(copy) == []
    assert moved and all(name.startswith("__isoc23_") for name in moved)


@pytest.fixture(scope="module")
def smol() -> Any:
    from polyrlm.plugins.demo.local_model import LocalModelServer, find_gguf

    # The one file served twice, as a sub-model and as a root: two models, so a
    # name that is neither is refused (a one-model server answers any name).
    with LocalModelServer(name="smol", n_ctx=512, root_path=find_gguf(), root_n_ctx=512) as server:
        yield server


@pytest.mark.localmodel
@pytest.mark.timeout(300)
def test_the_engine_serves_litellm_streamed_and_not(smol: Any) -> None:
    import litellm

    ask = [{"role": "user", "content": "What is the capital of France? One word."}]
    first = litellm.completion(smol.model, ask, **smol.options())
    assert first.choices[0].message.content.strip()
    assert first.usage.prompt_tokens > 10 and first.usage.completion_tokens >= 1
    again = litellm.completion(smol.model, ask, **smol.options())
    assert again.choices[0].message.content == first.choices[0].message.content  # greedy
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1
    chunks = list(
        litellm.completion(
            smol.model, ask, stream=True, stream_options={"include_usage": True}, **smol.options()
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == first.choices[0].message.content
    usage = [c.usage for c in chunks if getattr(c, "usage", None)]
    assert usage and usage[-1].completion_tokens == first.usage.completion_tokens


@pytest.mark.localmodel
@pytest.mark.timeout(300)
def test_the_engine_refuses_as_openai_does(smol: Any) -> None:
    import litellm

    long = [{"role": "user", "content": "word " * 2_000}]
    with pytest.raises(litellm.ContextWindowExceededError, match="maximum context length is 512"):
        litellm.completion(smol.model, long, **smol.options())
    hello = [{"role": "user", "content": "Hello."}]
    with pytest.raises(litellm.NotFoundError, match="no-such-model"):
        litellm.completion("openai/no-such-model", hello, **smol.options())
    answered = smol.chat_requests()
    root = litellm.completion(smol.root_model, hello, **smol.root_options())
    assert root.choices[0].message.content and smol.chat_requests() == answered + 1
