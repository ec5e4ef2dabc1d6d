"""User tools on every backend: they run in the host process, and what the
code sends them is checked on the host before they run. Arguments their
type hints refuse, oversized arguments and unknown argument names never
reach the function (counted on the host side); a valid call runs here, in
this process, not inside the sandbox."""

from __future__ import annotations

import os

import pytest

from polyrlm import RLM, StopReason
from polyrlm.events import CodeExecuted, ToolCalled
from polyrlm.testing.scripted import ScriptedModel
from tests.security.conftest import attack

BIG = 2 * 1024**2  # characters: past TOOL_ARGUMENTS_MAX_BYTES

PY = f"""for args in [dict(path=123), dict(path='x' * {BIG}), dict(path='ok', extra=1)]:
    try:
        print('ran:', probe(**args))
    except Exception as exc:
        print('refused:', str(exc)[:300])
print('pid:', probe('ok'))"""
SQL = [
    "SELECT probe(CAST(123 AS VARCHAR) || repeat('x', 0)) AS typed_ok",  # DuckDB's own cast
    f"SELECT probe(repeat('x', {BIG})) AS big",
    "SELECT 'pid: ' || probe('ok') AS pid",
]
BASH = f"""probe '{{"path": 123}}' || echo refused
printf '{{"path": "%s"}}' "$(head -c {BIG} /dev/zero | tr '\\0' x)" | probe || echo refused
probe '{{"path": "ok", "extra": 1}}' || echo refused
echo "pid: $(probe '{{"path": "ok"}}')"
"""
BACKENDS = {
    "python-inline": ("python", [PY]),
    "python": ("python", [PY]),
    "wasm": ("python", [PY]),
    "sql": ("sql", SQL),
    "bash": ("bash", [BASH]),
}
FINAL = {"python": "FINAL('ok')", "sql": "SELECT final('ok')", "bash": "final ok"}


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_tools_run_on_the_host_and_refuse_what_their_hints_refuse(backend: str) -> None:
    reached: list[tuple[str, int]] = []

    def probe(path: str) -> int:
        """Where the tool runs."""
        reached.append((path[:10], os.getpid()))
        return os.getpid()

    tag, blocks = BACKENDS[backend]
    root = ScriptedModel([*(f"```{tag}\n{b}\n```" for b in blocks), f"```{tag}\n{FINAL[tag]}\n```"])
    result = RLM(root.model, backend=backend, tools=[probe]).completion("q", "c")
    seen = "\n".join(
        f"{e.output}\n{e.error or ''}" for e in result.trajectory if isinstance(e, CodeExecuted)
    )
    calls = [e for e in result.trajectory if isinstance(e, ToolCalled)]
    host = os.getpid()
    valid = [r for r in reached if r[0] != "123"]  # SQL casts 123 itself: a valid text
    blocked = (
        all(pid == host for _, pid in reached)  # it ran here, in this process
        and f"pid: {host}" in seen
        and not any(len(p) == 10 and p == "x" * 10 for p, _ in reached)  # the big one never ran
        and all(p in ("ok", "123") for p, _ in valid)
        and "bytes" in seen  # refused for its size, the code told so
    )
    assert attack(backend, blocked), (seen, reached, [(c.tool, c.error) for c in calls])
    if backend != "sql":  # a wrong type and an unknown argument name are refused on the host
        assert [p for p, _ in reached] == ["ok"]
        assert sum(1 for c in calls if c.error and "bad arguments" in c.error) == 2
    assert result.stop_reason == StopReason.ANSWERED
