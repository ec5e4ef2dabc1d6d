"""The host picks the models, on every backend: code that names a model the
host did not offer (``llm_query(prompt, model=...)`` and its SQL, Bash and
WASM forms) gets a clear error inside the environment, and no request, and
so no credential, leaves the host for it; a model the host offered works."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from polyrlm import RLM, StopReason
from polyrlm.events import CodeExecuted
from polyrlm.testing.fake_server import FakeOpenAIServer
from polyrlm.testing.scripted import ScriptedModel
from tests.security.conftest import Canaries, attack

SUB, FAST = "openai/gpt-4o-mini", "openai/gpt-4o"
#: Names hostile code tries: a provider of its choosing, a local server's
#: provider (its default endpoint is loopback), a plain unknown name.
EVIL = ["llamafile/x", "hosted_vllm/x", "ollama/x", "openai/gpt-5"]

PY = """try:
    print('reply:', llm_query('x', model={name!r}))
except Exception as exc:
    print('refused:', exc)
print('fast:', llm_query('x', model='fast'))"""
SQL = "SELECT llm('x', {name!r}) AS r"
SQL_FAST = "SELECT 'fast: ' || llm('x', 'fast') AS r"
# Bash has no model flag on `llm`: hostile code drives the bridge client itself.
BASH = """py=$(sed -n 's/^exec \\([^ ]*\\) .*/\\1/p' "$(command -v llm)")
bin=$(dirname "$(command -v llm)")
"$py" -I -S -c "import sys; sys.path.insert(0, '$bin'); import bridge_client as b
try:
    print('reply:', b.llm_query('x', '{name}'))
except Exception as exc:
    print('refused:', exc)
print('fast:', b.llm_query('x', 'fast'))"
"""
BACKENDS = {
    "python-inline": ("python", [PY]),
    "python": ("python", [PY]),
    "wasm": ("python", [PY]),
    "sql": ("sql", [SQL, SQL_FAST]),
    "bash": ("bash", [BASH]),
}


@pytest.fixture
def server(canaries: Canaries) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(lambda view: "pong") as s:
        yield s


@pytest.mark.parametrize("name", EVIL)
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_code_cannot_pick_a_model_or_an_endpoint(
    backend: str, name: str, server: FakeOpenAIServer, canaries: Canaries
) -> None:
    tag, blocks = BACKENDS[backend]
    replies = [f"```{tag}\n{b.format(name=name)}\n```" for b in blocks]
    root = ScriptedModel([*replies, f"```{tag}\n" + _final(tag) + "\n```"])
    rlm = RLM(
        root.model,
        SUB,
        backend=backend,
        sub_models={"fast": FAST},
        # The host's credential goes with every sub-call it makes.
        sub_model_options={"api_base": server.base_url, "api_key": canaries.api_key},
    )
    result = rlm.completion("q", "c")
    seen = "\n".join(
        f"{e.output}\n{e.error or ''}" for e in result.trajectory if isinstance(e, CodeExecuted)
    )
    sent = {call.model for call in server.calls}
    blocked = (
        "is not one the host offers" in seen
        and sent <= {"gpt-4o"}  # only the offered alias went out
        and not canaries.listener.connections
        and canaries.api_key not in seen
    )
    assert attack(backend, blocked), (seen, sent)
    assert "fast: pong" in seen  # the host's own choice works
    assert result.stop_reason == StopReason.ANSWERED


def _final(tag: str) -> str:
    return {"python": "FINAL('ok')", "sql": "SELECT final('ok')", "bash": "final ok"}[tag]
