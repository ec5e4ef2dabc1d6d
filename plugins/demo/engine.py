"""A GGUF chat model in this process: llama.cpp's prebuilt libraries from
``llama-cpp-py-sync`` (the ``local`` extra; no compiler), driven through
llama.cpp's own C API.

Why not the package's ``Llama`` class: it tokenizes a chat prompt with the
special tokens read as text (``<|im_start|>`` becomes about seven tokens),
always builds its context for embeddings (every prompt token is output,
about 30% slower) and reports neither usage nor a ``length`` finish. Only
its CFFI declarations of ``llama.h`` are used here, with the library
loaded by :func:`native`, which makes a patched copy on glibc < 2.38 (see
:mod:`.glibc_compat`).

An :class:`Engine` holds one model and one context and serves one request
at a time (:attr:`Engine.lock`). Between requests it keeps the tokens its
context holds, so a prompt that starts like the last one (a root's next
turn: the same history plus one reply and one output) is evaluated only
from where they differ.
"""

from __future__ import annotations

import codecs
import importlib.metadata
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyrlm.errors import FatalError
from polyrlm.plugins.demo.glibc_compat import GlibcPatchError, glibc_version, patch_library

__all__ = [
    "ENGINE_DIR_ENV",
    "ENGINE_N_BATCH",
    "ENGINE_PACKAGE",
    "ENGINE_VERSION",
    "PIECE_BYTES",
    "Engine",
    "EngineError",
    "Generation",
    "PromptTooLong",
    "native",
    "require_engine",
]

#: The PyPI distribution of llama.cpp's prebuilt libraries, pinned exactly: the
#: CFFI declarations must match the binary.
ENGINE_PACKAGE = "llama-cpp-py-sync"
#: Its version (llama.cpp release b11739).
ENGINE_VERSION = "0.11739"
#: Environment variable naming the folder for the patched library copy
#: (default ``~/.cache/polyrlm/engine``).
ENGINE_DIR_ENV = "POLYRLM_ENGINE_DIR"
#: Tokens evaluated per llama_decode call while reading a prompt.
ENGINE_N_BATCH = 512
#: Bytes a single token's text may take (llama.cpp's pieces are a few bytes).
PIECE_BYTES = 256
_LIBLLAMA = "libllama.so"
_LOG_ERROR = 4
_native: tuple[Any, Any] | None = None
_native_lock = threading.Lock()
_log_callback: Any = None


class EngineError(FatalError):
    """The engine is missing, cannot load, or was asked for the impossible."""


class PromptTooLong(EngineError):
    """A prompt that leaves no room for a reply in the context (worded as OpenAI does)."""


def require_engine() -> None:
    """Raise :class:`EngineError` unless the pinned engine package is installed."""
    try:
        version = importlib.metadata.version(ENGINE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version != ENGINE_VERSION:
        found = f"version {version} is installed" if version else "it is not installed"
        raise EngineError(
            f"the local model needs {ENGINE_PACKAGE}=={ENGINE_VERSION} ({found}): run "
            '`pip install "polyrlm[local]"` (a 5.5 MB wheel of llama.cpp, no compiler)'
        )


def _engine_dir() -> Path:
    home = Path.home() / ".cache" / "polyrlm" / "engine"
    return Path(os.environ.get(ENGINE_DIR_ENV) or home)


def _patched_copy(source: Path) -> Path:
    """The libraries copied once into the engine folder and patched there."""
    dest = _engine_dir() / f"{ENGINE_PACKAGE}-{ENGINE_VERSION}-glibc-compat"
    if (dest / _LIBLLAMA).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".patching-", dir=dest.parent))
    try:
        for lib in [source / _LIBLLAMA, *sorted(source.glob("libggml*.so*"))]:
            shutil.copy2(lib, work / lib.name)
            patch_library(work / lib.name)
        try:
            work.rename(dest)  # atomic: a second process finds all or nothing
        except OSError:
            if not (dest / _LIBLLAMA).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _quiet_logs(ffi: Any, lib: Any) -> None:
    """llama.cpp logs every load step to stderr, and warns of model-file quirks
    it works around (Qwen's ``</s>`` token); keep its errors."""
    global _log_callback

    @ffi.callback("ggml_log_callback")  # type: ignore[untyped-decorator]
    def log(level: int, text: Any, user_data: Any) -> None:
        if level == _LOG_ERROR:
            sys.stderr.write(ffi.string(text).decode("utf-8", "replace"))

    _log_callback = log  # kept alive: llama.cpp holds the pointer
    lib.llama_log_set(log, ffi.NULL)


def native() -> tuple[Any, Any]:
    """The CFFI ``ffi`` and the loaded ``libllama`` (once per process)."""
    global _native
    with _native_lock:
        if _native is not None:
            return _native
        require_engine()
        spec = importlib.util.find_spec("llama_cpp_py_sync")
        assert spec is not None and spec.submodule_search_locations
        folder = Path(next(iter(spec.submodule_search_locations)))
        from llama_cpp_py_sync._cffi_bindings import ffi

        glibc = glibc_version()
        if glibc is not None and glibc < (2, 38):
            try:
                folder = _patched_copy(folder)
            except (OSError, GlibcPatchError) as exc:
                raise EngineError(f"cannot prepare llama.cpp for glibc {glibc}: {exc}") from exc
        try:
            lib = ffi.dlopen(str(folder / _LIBLLAMA))
        except OSError as exc:
            hint = " (Debian: apt-get install libgomp1)" if "libgomp" in str(exc) else ""
            raise EngineError(f"cannot load llama.cpp from {folder}: {exc}{hint}") from exc
        _quiet_logs(ffi, lib)
        lib.llama_backend_init()
        _native = (ffi, lib)
        return _native


@dataclass
class Generation:
    """What one request took and gave, filled in as it streams."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "length"


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of ``text`` that may start a stop string."""
    return max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


class Engine:
    """One GGUF model and one llama.cpp context of ``n_ctx`` tokens."""

    def __init__(self, path: str | Path, *, n_ctx: int, n_threads: int) -> None:
        self.ffi, self.lib = ffi, lib = native()
        self.path = Path(path)
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        self._model = lib.llama_model_load_from_file(str(self.path).encode(), params)
        if self._model == ffi.NULL:
            raise EngineError(f"llama.cpp cannot load the model {str(self.path)!r}")
        self._vocab = lib.llama_model_get_vocab(self._model)
        context = lib.llama_context_default_params()
        context.n_ctx, context.n_batch, context.n_ubatch = n_ctx, ENGINE_N_BATCH, ENGINE_N_BATCH
        context.n_threads = context.n_threads_batch = n_threads
        context.embeddings = False
        self._ctx = lib.llama_init_from_model(self._model, context)
        if self._ctx == ffi.NULL:
            lib.llama_model_free(self._model)
            raise EngineError(f"llama.cpp cannot make a {n_ctx}-token context")
        self.n_ctx = n_ctx
        self._template = lib.llama_model_chat_template(self._model, ffi.NULL)
        self._held: list[int] = []  # the tokens the context holds, in order
        self.lock = threading.Lock()

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The model's own chat template applied (llama.cpp's built-in renderer
        of the template the GGUF file names), ready for the assistant's reply."""
        ffi, lib = self.ffi, self.lib
        if self._template == ffi.NULL:
            raise EngineError(f"{self.path.name} has no chat template")
        keep = [
            (ffi.new("char[]", m["role"].encode()), ffi.new("char[]", m["content"].encode()))
            for m in messages
        ]
        chat = ffi.new("llama_chat_message[]", len(keep))
        for item, (role, content) in zip(chat, keep, strict=True):
            item.role, item.content = role, content
        size = 1024 + 2 * sum(len(m["content"].encode()) for m in messages)
        for _ in range(2):
            buf = ffi.new("char[]", size)
            n = lib.llama_chat_apply_template(self._template, chat, len(keep), True, buf, size)
            if n < 0:
                raise EngineError(f"llama.cpp cannot apply {self.path.name}'s chat template")
            if n <= size:
                return bytes(ffi.buffer(buf, n)).decode("utf-8", "replace")
            size = n
        raise EngineError("the chat template's output kept growing")

    def tokenize(self, text: str) -> list[int]:
        """Tokens of ``text``, its special markers read as the special tokens they are."""
        data = text.encode()
        room = len(data) + 16
        out = self.ffi.new("llama_token[]", room)
        n = self.lib.llama_tokenize(self._vocab, data, len(data), out, room, True, True)
        if n < 0:
            room = -n
            out = self.ffi.new("llama_token[]", room)
            n = self.lib.llama_tokenize(self._vocab, data, len(data), out, room, True, True)
        return list(out[0:n])

    def _piece(self, token: int) -> bytes:
        buf = self.ffi.new("char[]", PIECE_BYTES)
        n = self.lib.llama_token_to_piece(self._vocab, token, buf, PIECE_BYTES, 0, False)
        return bytes(self.ffi.buffer(buf, max(n, 0)))

    def _decode(self, tokens: Sequence[int]) -> None:
        for start in range(0, len(tokens), ENGINE_N_BATCH):
            chunk = list(tokens[start : start + ENGINE_N_BATCH])
            array = self.ffi.new("llama_token[]", chunk)
            code = self.lib.llama_decode(self._ctx, self.lib.llama_batch_get_one(array, len(chunk)))
            if code != 0:
                self._forget()
                raise EngineError(f"llama_decode failed (code {code})")
            self._held.extend(chunk)

    def _forget(self) -> None:
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self._ctx), True)
        self._held = []

    def _read_prompt(self, tokens: list[int]) -> int:
        """Evaluate ``tokens``, reusing the held prefix; returns the tokens reused."""
        same = 0
        for held, token in zip(self._held, tokens, strict=False):
            if held != token:
                break
            same += 1
        same = min(same, len(tokens) - 1)  # the last one is read again: its logits are needed
        memory = self.lib.llama_get_memory(self._ctx)
        if same <= 0 or not self.lib.llama_memory_seq_rm(memory, 0, same, -1):
            self._forget()
            same = 0
        del self._held[same:]
        self._decode(tokens[same:])
        return same

    def _sampler(self, temperature: float, top_p: float, seed: int) -> Any:
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
            return chain
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(top_p, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(temperature))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Sequence[str] = (),
        usage: Generation | None = None,
    ) -> Generator[str, None, None]:
        """Yield the reply's text as it is decoded (stop strings cut and held
        back until they cannot match); ``usage`` is filled in as it goes.
        Hold :attr:`lock` while iterating; closing the iterator stops it."""
        usage = usage if usage is not None else Generation()
        tokens = self.tokenize(prompt)
        usage.prompt_tokens = len(tokens)
        room = self.n_ctx - len(tokens)
        if room < 1:
            raise PromptTooLong(
                f"This model's maximum context length is {self.n_ctx} tokens. However, your "
                f"messages resulted in {len(tokens)} tokens."
            )
        usage.cached_tokens = self._read_prompt(tokens)
        sampler = self._sampler(temperature, top_p, seed)
        stops = [s for s in stop if s]
        text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        try:
            for _ in range(min(max_tokens, room)):
                token = self.lib.llama_sampler_sample(sampler, self._ctx, -1)
                if self.lib.llama_vocab_is_eog(self._vocab, token):
                    usage.finish_reason = "stop"
                    break
                usage.completion_tokens += 1
                pending += text.decode(self._piece(token))
                cut = min((pending.find(s) for s in stops if s in pending), default=-1)
                if cut >= 0:
                    pending, usage.finish_reason = pending[:cut], "stop"
                    break
                hold = _held_back(pending, stops)
                ready, pending = pending[: len(pending) - hold], pending[len(pending) - hold :]
                if ready:
                    yield ready
                self._decode([token])
            pending += text.decode(b"", final=True)
            if pending:
                yield pending
        finally:
            self.lib.llama_sampler_free(sampler)

    def close(self) -> None:
        """Free the context and the model (safe twice)."""
        if self._ctx is not None:
            self.lib.llama_free(self._ctx)
            self.lib.llama_model_free(self._model)
            self._ctx = self._model = None
