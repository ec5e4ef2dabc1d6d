"""The live model source: every request to a provider, through litellm.

What depends on the model comes from litellm's model map, never from a
list of our own: its window, which parameters it takes (``stop`` is sent
only where litellm says the model supports it; a model litellm does not
know gets no optional parameter from polyrlm), its prices, the credential
it needs. Root replies end right after their first complete code block
(:func:`polyrlm.parsing.code_end`), for every model: one that takes a stop
sequence stops there itself (and its text is cut here all the same); one
that takes none (the GPT-5 family, unknown models) is streamed and the
stream closed at the block. What lies past the block is neither read nor
counted as generated.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from polyrlm.errors import ModelCallFailed

__all__ = [
    "PLACEHOLDER_API_KEY",
    "PRICE_LIST_ENV",
    "LiteLLM",
    "Reply",
    "close_loop_clients",
    "litellm_module",
    "message_text",
    "use_local_price_list",
]

#: litellm fetches its price list over the network at import unless this
#: environment variable is set; polyrlm sets it to ``True`` (use the price
#: list that ships with litellm) unless the user set it. ``False`` refreshes
#: the prices from the network at import.
PRICE_LIST_ENV = "LITELLM_LOCAL_MODEL_COST_MAP"

#: Sent as the key to a server of your own (``api_base`` given, no key set):
#: OpenAI-compatible local servers need none, but the client insists on one.
PLACEHOLDER_API_KEY = "no-key-needed"

Messages = list[dict[str, Any]]


def message_text(message: Mapping[str, Any]) -> str:
    """A chat message's text, whether its content is a string or a list of
    parts (as when parts carry cache marks)."""
    content = message.get("content") or ""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


def use_local_price_list() -> None:
    """Point litellm at its bundled price list (before litellm is imported)
    unless the user chose otherwise: no network fetch, no retries, no warnings."""
    os.environ.setdefault(PRICE_LIST_ENV, "True")


def litellm_module() -> Any:
    """Import litellm on first use: it takes seconds, and the CLI's
    `backends` listing or a replay should not pay for it."""
    use_local_price_list()
    import litellm

    litellm.suppress_debug_info = True  # no "Provider List" banners on stdout
    return litellm


async def close_loop_clients() -> None:
    """Close the HTTP clients litellm cached for the running event loop.

    litellm keys its async clients by event loop; :meth:`RLM.completion`
    runs each call on a loop of its own, and once that loop ends its clients
    can never serve again, yet they stay cached with their sockets open (a
    file descriptor each, until the garbage collector finds them). Best
    effort: a litellm whose cache looks different is left alone.
    """
    lm = litellm_module()
    try:
        from litellm.caching.evicted_client_closer import running_loop_token

        cache = lm.in_memory_llm_clients_cache
        suffix = f"-{running_loop_token()}"
        keys = [k for k in list(cache.cache_dict) if isinstance(k, str) and k.endswith(suffix)]
    except Exception:
        return
    for key in keys:
        handler = cache.cache_dict.pop(key, None)
        getattr(cache, "ttl_dict", {}).pop(key, None)
        client = getattr(handler, "client", handler)
        # The transport first: litellm's aiohttp transport for httpx keeps its
        # own session, which closing the httpx client alone leaves open.
        for owner in (getattr(client, "_transport", None), client):
            close = getattr(owner, "aclose", None) or getattr(owner, "close", None)
            try:
                result: Any = close() if callable(close) else None
                if inspect.isawaitable(result):
                    await result
            except Exception:  # closing is a courtesy; never fail a finished run on it
                continue


@dataclass(frozen=True)
class Reply:
    """One answered request."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    #: Prompt tokens the provider served from its prompt cache.
    cached_tokens: int
    #: None when litellm has no price for the model.
    cost_usd: float | None
    #: Native tool calls: ``{"id", "name", "arguments"}`` (arguments as JSON text).
    tool_calls: tuple[dict[str, str], ...] = ()


def _credential_names(missing: list[str]) -> list[str]:
    # validate_environment also lists optional settings (OLLAMA_API_BASE): keep secrets only.
    return [n for n in missing if any(w in n for w in ("KEY", "TOKEN", "SECRET"))]


class LiteLLM:
    """Requests through ``litellm.acompletion``; one per broker."""

    def __init__(self, timeout_s: float) -> None:
        self.lm = litellm_module()
        self.timeout_s = timeout_s
        lm = self.lm
        #: Errors worth another attempt: rate limits, 5xx, timeouts, broken connections.
        self.retryable: tuple[type[BaseException], ...] = (
            lm.RateLimitError,
            lm.InternalServerError,
            lm.ServiceUnavailableError,
            lm.BadGatewayError,
            lm.Timeout,
            lm.APIConnectionError,
        )
        #: Other HTTP statuses worth another attempt (529: overloaded).
        self.retry_statuses = frozenset({408, 409, 425, 429, *range(500, 600)})
        #: The provider refused a prompt as longer than the model's window.
        self.too_long: tuple[type[BaseException], ...] = (lm.ContextWindowExceededError,)
        self._windows: dict[str, int | None] = {}
        self._params: dict[str, frozenset[str]] = {}
        self._unpriced: set[str] = set()

    # -- what the model map says ------------------------------------------

    def window(self, model: str) -> int | None:
        """Input tokens ``model`` accepts, from litellm's map (None: unknown)."""
        if model not in self._windows:
            try:
                info = self.lm.get_model_info(model)
                self._windows[model] = info.get("max_input_tokens") or info.get("max_tokens")
            except Exception:  # unmapped model: no guard rather than a crash
                self._windows[model] = None
        return self._windows[model]

    def takes(self, model: str, param: str) -> bool:
        """Whether ``model`` is in litellm's map and takes the OpenAI parameter
        ``param`` there; unknown models take nothing polyrlm would add."""
        if model not in self._params:
            try:
                supported = self.lm.get_supported_openai_params(model=model)
            except Exception:
                supported = None
            self._params[model] = frozenset(supported or ())
        return param in self._params[model] and self.window(model) is not None

    def max_output(self, model: str) -> int | None:
        """Completion tokens ``model`` may produce, from litellm's map (None: unknown)."""
        try:
            value = self.lm.get_model_info(model).get("max_output_tokens")
        except Exception:  # unmapped model
            return None
        return int(value) if value else None

    def caps_output(self, model: str) -> bool:
        """Whether a ``max_tokens`` cap reaches ``model``: litellm lists it
        among the provider's parameters, or the provider is a custom one
        (litellm hands those every option as given)."""
        if model not in self._params:
            self.takes(model, "max_tokens")
        provider = model.split("/", 1)[0]
        custom = any(p.get("provider") == provider for p in self.lm.custom_provider_map)
        return custom or "max_tokens" in self._params[model]

    def _info(self, model: str, flag: str) -> bool:
        try:
            return bool(self.lm.get_model_info(model).get(flag))
        except Exception:  # unmapped model
            return False

    def calls_functions(self, model: str) -> bool:
        """litellm's map says the model takes native tool (function) calls."""
        return self._info(model, "supports_function_calling")

    def caches_prompts(self, model: str) -> bool:
        """Whether prompts to ``model`` get cache marks: litellm's map says its
        provider caches prompt prefixes, and it is a Claude model (Anthropic,
        Bedrock, Vertex), whose cache reads only marked prefixes. OpenAI and
        the like cache on their own; their cached tokens are counted all the
        same."""
        return "claude" in model.lower() and self._info(model, "supports_prompt_caching")

    def count(self, model: str, messages: Messages | None = None, text: str = "") -> int:
        """Tokens of ``messages`` or ``text`` by the model's tokenizer (litellm's)."""
        if messages is not None:
            return int(self.lm.token_counter(model=model, messages=messages))
        return int(self.lm.token_counter(model=model, text=text)) if text else 0

    def options(self, model: str, options: Mapping[str, Any], stop: list[str]) -> dict[str, Any]:
        """``options`` for ``model``: the user's as given (litellm refuses what
        the model rejects, at once and by name), ``stop`` added only where the
        model takes it, and a credential checked before anything is sent."""
        opts = dict(options)
        if stop and "stop" not in opts and self.takes(model, "stop"):
            opts["stop"] = stop
        if "api_key" not in opts and "mock_response" not in opts:  # (litellm's test double)
            missing = self._missing_credentials(model, opts)
            if missing and opts.get("api_base"):
                opts["api_key"] = PLACEHOLDER_API_KEY  # a server of your own
            elif missing:
                raise ModelCallFailed(
                    f"{model} needs {' or '.join(missing)}: set it in the environment, or pass "
                    "api_key=... (--api-key); nothing was sent"
                )
        return opts

    def _missing_credentials(self, model: str, opts: Mapping[str, Any]) -> list[str]:
        try:
            found = self.lm.validate_environment(model=model, api_base=opts.get("api_base"))
        except Exception:  # a provider litellm cannot check: let the request tell
            return []
        return _credential_names(list(found.get("missing_keys") or []))

    def should_retry(self, exc: BaseException) -> bool:
        """Rate limits, 5xx (529 too), timeouts and broken connections."""
        if isinstance(exc, self.retryable):
            return True
        return isinstance(exc, self.lm.APIError) and getattr(exc, "status_code", None) in (
            self.retry_statuses
        )

    def explain(self, model: str, exc: BaseException) -> str:
        """A failed request's error for the user; an authentication error says
        which variable holds the key."""
        text = f"{model}: {type(exc).__name__}: {exc}"
        if isinstance(exc, self.lm.AuthenticationError):
            provider = model.split("/", 1)[0].upper() if "/" in model else "the provider's"
            text += f" (check {provider}_API_KEY, or pass api_key=... / --api-key)"
        return text

    # -- requests -----------------------------------------------------------

    async def complete(
        self,
        model: str,
        messages: Messages,
        options: Mapping[str, Any],
        cut: Callable[[str], int | None] | None = None,
        timeout_s: float | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Reply:
        """One request, given up after ``timeout_s`` (default: the broker's
        per-call timeout). With ``cut`` the reply ends at the index ``cut``
        returns: where the request carries no stop sequence (the model takes
        none) it is streamed and the stream closed there; where it does, the
        model itself stops at the block, and the text is still cut here in
        case it did not (a stop is never the only guard). Either way what lies
        past the cut is not counted as generated. With ``on_text`` the reply
        is streamed even with a stop sequence, and ``on_text`` gets the text
        so far after every piece."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        if cut is not None and (on_text is not None or not options.get("stop")):
            return await self._streamed(model, messages, options, cut, timeout, on_text)
        response = await self.lm.acompletion(
            model=model,
            messages=messages,
            timeout=timeout,
            max_retries=0,  # retries are ours, not the SDK's
            **options,
        )
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise ModelCallFailed(f"{model}: the provider's reply has no choices")
        message = choices[0].message
        text = str(message.content or "")
        calls = tuple(
            {
                "id": str(call.id or f"call_{n}"),
                "name": str(call.function.name or ""),
                "arguments": str(call.function.arguments or ""),
            }
            for n, call in enumerate(getattr(message, "tool_calls", None) or [], 1)
        )
        pt, ct, cached = _usage(getattr(response, "usage", None))
        if not pt and not ct:  # a provider that sends no usage: count ourselves
            pt, ct = self.count(model, messages), self.count(model, text=text)
            cost = self.price(model, pt, ct)
        else:
            cost = self._response_cost(model, response)
        at = cut(text) if cut is not None else None
        if at is not None and at < len(text):  # the model went on past its block
            text, ct = text[:at], max(1, self.count(model, text=text[:at]))
            return Reply(text, pt, ct, cached, self.price(model, pt, ct, cached))
        return Reply(text, pt, ct, cached, cost, tool_calls=calls)

    async def _streamed(
        self,
        model: str,
        messages: Messages,
        options: Mapping[str, Any],
        cut: Callable[[str], int | None],
        limit_s: float,
        on_text: Callable[[str], None] | None = None,
    ) -> Reply:
        # The usage (cached tokens too) in the stream's last chunk: OpenAI's way,
        # which litellm also honours for the providers it streams itself.
        extra: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
        stream = await self.lm.acompletion(
            model=model,
            messages=messages,
            timeout=limit_s,
            max_retries=0,
            **extra,
            **options,
        )
        text, usage, at = "", None, None
        calls: dict[int, dict[str, str]] = {}
        try:
            async for chunk in stream:
                usage = getattr(chunk, "usage", None) or usage
                for choice in getattr(chunk, "choices", None) or []:
                    piece = getattr(choice.delta, "content", None) or ""
                    text += piece
                    if piece and on_text is not None:
                        on_text(text)
                    _add_tool_deltas(calls, getattr(choice.delta, "tool_calls", None))
                    if "\n" in piece or "\r" in piece:  # a line ended: a fence may have closed
                        at = cut(text)
                if at is not None:
                    break
        finally:
            await stream.aclose()  # at the cut: nothing more is generated or read
        if at is not None:
            text = text[:at]
            pt, ct, cached = self.count(model, messages), max(1, self.count(model, text=text)), 0
        else:
            pt, ct, cached = _usage(usage)
            if not pt and not ct:  # a provider that sends no usage: count ourselves
                pt, ct = self.count(model, messages), self.count(model, text=text)
        cost = self.price(model, pt, ct, cached)
        tools = () if at is not None else tuple(calls[i] for i in sorted(calls))
        return Reply(text, pt, ct, cached, cost, tools)

    # -- prices --------------------------------------------------------------

    def _response_cost(self, model: str, response: Any) -> float | None:
        """The cost litellm already computed for this response (its own cost
        map); computing it again would double litellm's per-call CPU."""
        hidden = getattr(response, "_hidden_params", None) or {}
        cost = hidden.get("response_cost") if isinstance(hidden, dict) else None
        if cost is not None:
            return float(cost)
        if model in self._unpriced:
            return None
        try:
            return float(self.lm.completion_cost(completion_response=response))
        except Exception:  # unmapped model: cost unknown, not a crash
            self._unpriced.add(model)
            return None

    def price(self, model: str, pt: int, ct: int, cached: int = 0) -> float | None:
        """USD for these token counts at litellm's prices (None: unpriced)."""
        if model in self._unpriced or self.window(model) is None:
            return None
        try:
            prompt, completion = self.lm.cost_per_token(
                model=model,
                prompt_tokens=pt,
                completion_tokens=ct,
                cache_read_input_tokens=cached,
            )
            return float(prompt) + float(completion)
        except Exception:
            self._unpriced.add(model)
            return None


def _usage(usage: Any) -> tuple[int, int, int]:
    """(prompt, completion, cached prompt) tokens of a litellm usage block."""
    if usage is None:
        return 0, 0, 0
    pt = int(getattr(usage, "prompt_tokens", 0) or 0)
    ct = int(getattr(usage, "completion_tokens", 0) or 0)
    details = getattr(usage, "prompt_tokens_details", None)
    cached = int(getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
    return pt, ct, cached


def _add_tool_deltas(calls: dict[int, dict[str, str]], deltas: Any) -> None:
    """Fold streamed tool-call pieces (OpenAI's delta format, which litellm
    gives for every provider) into whole calls, by index."""
    for n, delta in enumerate(deltas or []):
        index = getattr(delta, "index", None)
        call = calls.setdefault(n if index is None else int(index), {})
        call.setdefault("id", "")
        call.setdefault("name", "")
        call.setdefault("arguments", "")
        if getattr(delta, "id", None):
            call["id"] = str(delta.id)
        function = getattr(delta, "function", None)
        if function is not None:
            name = str(getattr(function, "name", None) or "")
            call["name"] = call["name"] or name
            call["arguments"] += str(getattr(function, "arguments", None) or "")
