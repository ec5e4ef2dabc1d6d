"""The opt-in on-disk response cache (diskcache), keyed by the whole request."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from polyrlm.recording import public_options

__all__ = ["CachedReply", "ResponseCache", "request_digest"]

#: Bytes the cache may occupy on disk before diskcache evicts old entries.
CACHE_SIZE_LIMIT_BYTES = 2 * 1024**3


def request_digest(model: str, messages: list[dict[str, Any]], options: dict[str, Any]) -> str:
    """sha256 of everything that decides a reply (model, messages, options;
    credentials left out)."""
    blob = json.dumps(
        {"model": model, "messages": messages, "options": public_options(options)},
        sort_keys=True,
        default=str,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


#: text, prompt tokens, completion tokens, native tool calls
CachedReply = tuple[str, int, int, list[dict[str, str]]]


class ResponseCache:
    """Replies stored on disk by request digest. Safe across processes."""

    def __init__(self, directory: str | Path) -> None:
        import diskcache  # lazy: only users of the cache pay for it

        self.directory = Path(directory).expanduser()
        self._cache = diskcache.Cache(str(self.directory), size_limit=CACHE_SIZE_LIMIT_BYTES)

    def get(self, digest: str) -> CachedReply | None:
        value = self._cache.get(digest)
        if isinstance(value, tuple) and len(value) in (3, 4):  # 3: before tool calls
            calls = list(value[3]) if len(value) == 4 else []
            return (str(value[0]), int(value[1]), int(value[2]), calls)
        return None

    def put(self, digest: str, reply: CachedReply) -> None:
        self._cache.set(digest, tuple(reply))

    def close(self) -> None:
        self._cache.close()
