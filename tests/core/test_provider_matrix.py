"""The model names users type, through litellm's real OpenAI and Anthropic
provider code and the fake server's real wire formats, on every backend:
each run answers, its reply is cut after the code block (with and without
stop-sequence support), and no request carries a parameter the model's map
rejects."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polyrlm import RLM, StopReason
from polyrlm.events import CodeExecuted, ModelCalled
from polyrlm.provider import litellm_module
from polyrlm.records import Role
from polyrlm.testing.fake_server import FakeOpenAIServer, FakeReply, FakeToolCall, ServedCall

#: Hosted names (litellm's map knows them) and a served name it does not know.
MODELS = [
    "openai/gpt-5",
    "openai/gpt-5-mini",
    "openai/gpt-5-nano",
    "openai/o3",
    "openai/o4-mini",
    "openai/gpt-4.1-mini",
    "openai/gpt-4o",
    "anthropic/claude-sonnet-4-5",
    "anthropic/claude-haiku-4-5",
    "anthropic/claude-opus-4-1",
    "openai/served-model",  # a local OpenAI-compatible server's own name
]
BACKENDS = ["python-inline", "python", "sql", "bash", "wasm"]

SECRET = "7714-ALPHA"
QUESTION = "What is the secret code?"
#: The root's code per language: find the needle's line, ask the sub-model.
FIND = {
    "python": (
        "line = next(l for l in context.splitlines() if 'secret code' in l)\n"
        f"FINAL(llm_query({QUESTION!r} + ' ' + line))"
    ),
    "sql": (
        f"SELECT final(llm('{QUESTION} ' || text)) FROM context "
        "WHERE text LIKE '%secret code%' LIMIT 1"
    ),
    "bash": f"grep 'secret code' \"$CONTEXT\" | head -1 | llm '{QUESTION}' | final",
}
#: What a model invents after its block; it must never be read.
INVENTED = "\nOutput:\n```text\nWRONG\n```\nThe secret code is WRONG. " + "More. " * 300

#: Seconds between streamed pieces (a fast model: 8 characters per 2 ms).
STREAM_DELAY_S = 0.002

#: Keys of a request that are the protocol itself, not model parameters.
WIRE_KEYS = {"model", "messages", "stream", "stream_options", "tools", "tool_choice"}
#: What Anthropic's Messages API takes.
ANTHROPIC_KEYS = {
    "model", "messages", "system", "max_tokens", "stream", "tools", "tool_choice",
    "stop_sequences", "temperature", "top_p", "top_k", "metadata", "thinking",
}  # fmt: skip


def haystack() -> str:
    lines = [f"line {i}: nothing to see here, just filler words" for i in range(3000)]
    lines[1789] = f"line 1789: the secret code is {SECRET}, remember it"
    return "\n".join(lines)


def language(backend: str) -> str:
    return {"sql": "sql", "bash": "bash"}.get(backend, "python")


def responder(backend: str) -> Any:
    lang = language(backend)

    def reply(body: dict[str, Any]) -> str | FakeReply:
        last = str(body["messages"][-1].get("content") or "")
        if last.startswith(QUESTION):  # a sub-call: extract the code
            found = re.search(r"code is ([A-Z0-9-]+)", last)
            return found.group(1) if found else "NONE"
        if body.get("tools"):  # offered the run_code tool: use it
            return FakeReply("Searching.", (FakeToolCall("run_code", {"code": FIND[lang]}),))
        return f"Searching.\n```{lang}\n{FIND[lang]}\n```{INVENTED}"

    return reply


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, FakeOpenAIServer]]:
    # Paced like a model generating: a stream the client closes is not all written.
    pace = {"stream_delay_s": STREAM_DELAY_S}
    with (
        FakeOpenAIServer(responder("python"), **pace) as python,
        FakeOpenAIServer(responder("sql"), **pace) as sql,
        FakeOpenAIServer(responder("bash"), **pace) as bash,
    ):
        yield {"python": python, "sql": sql, "bash": bash}


def options(model: str, server: FakeOpenAIServer) -> dict[str, Any]:
    if model.startswith("anthropic/"):
        return {"api_base": server.anthropic_base_url, "api_key": "sk-ant-test"}
    if model == "openai/served-model":
        return {"api_base": server.base_url}  # no key: a server of your own needs none
    return {"api_base": server.base_url, "api_key": "sk-test"}


def check_parameters(model: str, call: ServedCall) -> None:
    sent = set(call.body) - WIRE_KEYS
    if call.path.endswith("/messages"):
        assert sent <= ANTHROPIC_KEYS, (model, sent - ANTHROPIC_KEYS)
        return
    supported = set(litellm_module().get_supported_openai_params(model=model) or ())
    assert sent <= supported, (model, sent - supported)
    if model.startswith("openai/gpt-5"):
        assert "stop" not in sent  # litellm refuses it for the GPT-5 family


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", MODELS)
def test_the_needle_through_real_provider_code(
    model: str, backend: str, servers: dict[str, FakeOpenAIServer], tmp_path: Path
) -> None:
    server = servers[language(backend)]
    before = len(server.calls)
    rlm = RLM(model, model, backend=backend, **options(model, server))
    result = rlm.completion(QUESTION, haystack())
    assert (result.answer, result.stop_reason) == (SECRET, StopReason.ANSWERED), result.error
    served = server.wait_for_calls(before + 2)[before:]
    assert len(served) == 2  # one root turn, one sub-call
    for call in served:
        check_parameters(model, call)
        assert call.status == 200
    root = next(e for e in result.trajectory if isinstance(e, ModelCalled) and e.role == Role.ROOT)
    ran = [e.code for e in result.trajectory if isinstance(e, CodeExecuted)]
    assert ran == [FIND[language(backend)]]
    assert "WRONG" not in (root.response or "")  # cut after the block, never read
    if model == "openai/served-model":
        assert all(c.headers.get("authorization") == "Bearer no-key-needed" for c in served)
    if root.tool_calls:  # the native channel (Claude, auto)
        assert model.startswith("anthropic/") and root.tool_calls[0]["name"] == "run_code"
        return
    # The root call (instructions and question; the sub-call has one message): a
    # stream is recorded when it ends, which may be after the sub-call.
    first = max(served, key=lambda c: len(c.messages))
    if first.body.get("stop") or first.body.get("stop_sequences"):
        assert "WRONG" not in first.reply  # the model stopped at the block (server side)
        # Streamed only where the turn is pipelined (bash by default): the
        # pipeline follows the block as it arrives.
        assert bool(first.body.get("stream")) == rlm.settings.pipelined
    else:  # no stop for this model: streamed, and closed at the block's end
        assert first.body.get("stream") and first.disconnected
        assert root.completion_tokens < first.completion_tokens
