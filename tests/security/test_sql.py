"""sql backend under attack: hostile model-written SQL against the host.

Each attack runs from inside the environment, as the model's SQL would
(through the environment, or the whole loop with a scripted root), and is
judged from the host: the host alive, its peak memory (VmHWM, reset before
each attack) barely grown, the temporary directory's size bounded, no
canary in anything the host got back, nothing on the host's stdout.

Every dangerous statement runs under small limits (:data:`SMALL`), and the
worker's own address-space cap is checked before it runs: a guard that
regresses fails a test instead of exhausting a shared machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("duckdb")
pa = pytest.importorskip("pyarrow")

from polyrlm import RLM, StopReason  # noqa: E402
from polyrlm.backends.sql import process  # noqa: E402
from polyrlm.backends.sql.environment import SqlEnvironment  # noqa: E402
from polyrlm.backends.sql.limits import (  # noqa: E402
    SQL_ANSWER_MAX_CHARS,
    SQL_ERROR_MAX_CHARS,
    SQL_STATE_MAX_ITEMS,
)
from polyrlm.backends.sql.render import (  # noqa: E402
    CELL_CHARS,
    FEW_ROWS,
    FEW_ROWS_CELL_CHARS,
    collect,
)
from polyrlm.events import CodeExecuted  # noqa: E402
from polyrlm.testing.contract import EchoSubCalls  # noqa: E402
from polyrlm.testing.scripted import ScriptedModel  # noqa: E402
from tests.security.conftest import Canaries, attack, host_alive  # noqa: E402

MiB = 2**20
#: Limits small enough that no attack can take much of the machine: about
#: 1 GB of address space is left to DuckDB once the worker has started.
SMALL: dict[str, Any] = {
    "threads": 2,
    "memory_limit_bytes": 64 * MiB,
    "temp_limit_bytes": 128 * MiB,
    "worker_memory_bytes": 1536 * MiB,
    "exec_timeout_s": 10.0,
}
#: 400 MB of text, built at memory speed (repeating one character is slow).
BIG = "repeat(repeat('x', 1000000), 400)"
#: Host peak memory growth allowed per attack (the attacks aim at gigabytes).
HOST_GROWTH_MAX_BYTES = 256 * MiB
#: The most an error may be: the cap, and what the runner says around it.
ERROR_MAX = SQL_ERROR_MAX_CHARS + 1_000


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


class HostMemory:
    """The growth of this process's peak resident memory across a block."""

    def __enter__(self) -> HostMemory:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        self.before = _status_bytes("VmRSS")
        self.growth = 0
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth = _status_bytes("VmHWM") - self.before


def _env(**config: Any) -> SqlEnvironment:
    env = SqlEnvironment(EchoSubCalls(), SqlEnvironment.Config(**{**SMALL, **config}))
    env.load_context("hello\nworld")
    return env


def _worker_pid(env: SqlEnvironment) -> int:
    worker = env.db.worker  # type: ignore[attr-defined]
    assert worker is not None
    return int(worker.process.pid)


def _address_cap(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            return int(line.split()[3])
    raise AssertionError("no address-space limit listed")


@pytest.fixture
def env(canaries: Canaries) -> Iterator[SqlEnvironment]:
    """A worker environment under SMALL, its cap checked before any attack."""
    with _env() as e:
        assert _address_cap(_worker_pid(e)) <= SMALL["worker_memory_bytes"] + 64 * MiB
        yield e


def _works(env: SqlEnvironment) -> bool:
    result = env.execute("SELECT count(*) AS n FROM context")
    return result.error is None and result.output.splitlines()[2] == "2"


def test_the_worker_is_capped_and_holds_no_host_secret(
    env: SqlEnvironment, canaries: Canaries
) -> None:
    pid = _worker_pid(env)
    assert pid != os.getpid()
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    result = env.execute("SELECT getenv('OPENAI_API_KEY') AS k, getenv('ANTHROPIC_API_KEY') AS a")
    seen = result.output + (result.error or "")
    assert attack("sql", canaries.api_key.encode() not in environ and not canaries.leaked_in(seen))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT repeat('x', 2e9::BIGINT) AS s",
        "SELECT length(repeat('x', 2e9::BIGINT)) AS n",
        f"SELECT max(length({BIG} || range::VARCHAR)) AS n FROM range(4)",  # 4 x 400 MB at once
        f"SELECT list({BIG} || range::VARCHAR) AS l FROM range(4)",
        "SELECT length(string_agg(repeat('y', 1000000), '')) AS n FROM range(3000)",
        "SELECT len(list(range)) AS n FROM range(300000000)",
    ],
)
def test_huge_values_fail_in_the_worker_not_the_host(
    env: SqlEnvironment, capfd: pytest.CaptureFixture[str], sql: str
) -> None:
    with HostMemory() as host:
        result = env.execute(sql)
    out = capfd.readouterr()
    blocked = (
        host_alive()
        and host.growth < HOST_GROWTH_MAX_BYTES
        and result.error is not None
        and "Out of Memory" in result.error
        and len(result.error) <= ERROR_MAX
        and not out.out
        and not out.err
    )
    assert attack("sql", blocked), (host.growth, result)
    assert _works(env)  # the same worker, its tables kept
    assert not env.execute("SELECT 1").restarted


def test_a_large_value_reaches_the_host_cut_to_the_capture_limit(env: SqlEnvironment) -> None:
    with HostMemory() as host:
        # 30 MB: within DuckDB's memory_limit (64 MiB), so it is a result, not an error
        result = env.execute("SELECT repeat(repeat('x', 1000000), 30) AS s")
    limit = env.config.capture_limit_chars
    blocked = (
        result.error is None
        and len(result.output) <= limit
        and result.truncated_chars >= 30 * 10**6 - limit
        and host.growth < HOST_GROWTH_MAX_BYTES
    )
    assert attack("sql", blocked), (host.growth, result.truncated_chars)


def test_rendering_copies_no_more_than_it_shows() -> None:
    # The render path itself (the host's, with worker=False): a 20 MB cell
    # becomes at most the capture limit of Python text.
    big = "é" * 10**7
    one = collect(pa.table({"s": [big]}).to_reader(), value_chars=1_000)
    many = collect(pa.table({"s": [big, big], "t": [[1] * 10**6, [2]]}).to_reader())
    assert len(one.head[0][0]) == 1_001 and one.first_cut == len(big) - 1_001
    # The first FEW_ROWS rows are kept wider (shown so when no more come).
    assert [len(r[0]) for r in many.head] == [FEW_ROWS_CELL_CHARS + 1] * 2
    assert many.head[0][1].startswith("<list") and many.head[1][1] == [2]
    rows = collect(pa.table({"s": [big] * (FEW_ROWS + 2)}).to_reader())
    kept = [len(r[0]) for r in rows.head]
    assert kept == [FEW_ROWS_CELL_CHARS + 1] * FEW_ROWS + [CELL_CHARS + 1] * 2


@pytest.mark.parametrize("worker", [True, False])
def test_error_text_is_capped(canaries: Canaries, worker: bool) -> None:
    with _env(worker=worker) as env:
        with HostMemory() as host:
            result = env.execute("SELECT error(repeat('e', 1e6::BIGINT))")
        assert result.error is not None and "[error cut" in result.error
        assert attack("sql", len(result.error) <= ERROR_MAX and host.growth < 64 * MiB)
        if worker:  # 300 MB of error text, built inside the worker only
            with HostMemory() as host:
                result = env.execute("SELECT error(repeat(repeat('e', 1000000), 300))")
            assert result.error is not None
            assert attack("sql", len(result.error) <= ERROR_MAX and host.growth < 64 * MiB)
        assert _works(env)


def _tree_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # a spill file removed while we looked
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


@pytest.mark.parametrize("worker", [True, False])
def test_spilling_stays_within_the_temp_limit(canaries: Canaries, worker: bool) -> None:
    with _env(worker=worker) as env:
        folder: Path = env._dir
        base = _tree_bytes(folder)
        peak, done = [0], threading.Event()

        def watch() -> None:
            while not done.wait(0.02):
                peak[0] = max(peak[0], _tree_bytes(folder) - base)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with HostMemory() as host:
                result = env.execute(
                    "CREATE TABLE big AS SELECT range AS i, md5(range::VARCHAR) || "
                    "md5((range + 1)::VARCHAR) AS s FROM range(6000000)"
                )
        finally:
            done.set()
            watcher.join()
        bound = SMALL["temp_limit_bytes"] + 16 * MiB
        in_host = SMALL["memory_limit_bytes"] * 3 if not worker else 0
        blocked = (
            result.error is not None
            and "max_temp_directory_size" in result.error
            and peak[0] <= bound
            and host.growth < HOST_GROWTH_MAX_BYTES + in_host
        )
        assert attack("sql", blocked), (peak[0], host.growth, result.error)
        assert _works(env)
    assert not folder.exists()  # the spill directory is the environment's own


@pytest.mark.parametrize("worker", [True, False])
def test_nothing_prints_on_the_host(
    canaries: Canaries, capfd: pytest.CaptureFixture[str], worker: bool
) -> None:
    with _env(worker=worker, exec_timeout_s=2.5) as env:
        shown = env.execute("SELECT current_setting('enable_progress_bar') AS p").output
        turned_on = env.execute("SET enable_progress_bar = true; SET progress_bar_time = 0")
        # Longer than DuckDB's progress bar wait (2 s): it would have printed.
        slow = env.execute(env.contract.loop_forever)
    out = capfd.readouterr()
    assert shown.splitlines()[2] == "false" and turned_on.error is not None
    assert slow.timed_out
    assert attack("sql", not out.out and not out.err), out


def _file_attacks(canaries: Canaries, tmp_path: Path) -> list[str]:
    secret, url = canaries.secret_file, canaries.listener.url
    return [
        f"SELECT * FROM read_text('{secret}')",
        f"SELECT * FROM read_csv('{secret}', header = false)",
        f"SELECT * FROM read_blob('{secret}')",
        f"SELECT * FROM '{secret}'",
        f"SELECT * FROM read_text('{secret.parent}/*')",
        f"SELECT * FROM glob('{secret.parent}/*')",
        f"COPY (SELECT 1) TO '{tmp_path}/out.csv'",
        f"EXPORT DATABASE '{tmp_path}/export'",
        f"ATTACH '{tmp_path}/new.duckdb' AS w",
        f"ATTACH '{secret}' AS s",
        "INSTALL httpfs",
        "LOAD httpfs",
        f"SELECT * FROM read_text('{url}/x')",
        f"SELECT * FROM read_csv('{url}/y.csv')",
        "SET enable_external_access = true",
        f"SET allowed_paths = ['{secret}']",
        f"SET temp_directory = '{tmp_path}/spill'",
        "SET memory_limit = '100GB'",
        "SET max_temp_directory_size = '1TB'",
        "PRAGMA enable_progress_bar",
        "RESET memory_limit",
        "CREATE PERSISTENT SECRET leak (TYPE s3, KEY_ID 'k', SECRET 's')",
        "SELECT * FROM read_text('/proc/self/environ')",
        "SELECT * FROM read_blob('/proc/self/maps')",
        "SELECT getenv('OPENAI_API_KEY') AS k",
        "SELECT * FROM secret_frame",  # a Python variable of the host's (a replacement scan)
    ]


@pytest.mark.parametrize("worker", [True, False])
def test_file_network_and_settings_attacks_are_refused(
    canaries: Canaries, tmp_path: Path, worker: bool
) -> None:
    secret_frame = pa.table({"s": [canaries.memory_secret]})  # noqa: F841 - the attack's target
    before = set(tmp_path.iterdir())
    with _env(worker=worker) as env:
        for sql in _file_attacks(canaries, tmp_path):
            result = env.execute(sql)
            seen = result.output + (result.error or "")
            leaked = canaries.leaked_in(seen) or "file-canary" in seen
            assert attack("sql", not leaked and result.error is not None), (sql, result)
        assert _works(env)
    assert set(tmp_path.iterdir()) == before  # nothing written
    assert not (Path.home() / ".duckdb" / "stored_secrets" / "leak.duckdb_secret").exists()
    assert canaries.listener.connections == 0


def test_an_oversized_answer_is_refused(env: SqlEnvironment) -> None:
    with HostMemory() as host:
        result = env.execute(f"SELECT final(repeat('a', {SQL_ANSWER_MAX_CHARS + 1}))")
    assert result.error is not None and "at most" in result.error
    blocked = not env.read_state().answer_ready and host.growth < HOST_GROWTH_MAX_BYTES
    assert attack("sql", blocked)
    assert env.execute("SELECT final('fine')").answer == "fine"


def test_malformed_worker_reports_are_the_models_error(env: SqlEnvironment) -> None:
    good = env.execute("SELECT 1 AS one").model_dump(mode="json")
    limit = env.config.capture_limit_chars
    bad = [
        "not a result",
        {**good, "output": "x" * (limit + 1)},
        {**good, "error": "e" * (ERROR_MAX + 1)},
        {**good, "restarted": True},
        {**good, "answer_ready": True, "answer": "a" * (SQL_ANSWER_MAX_CHARS + 1)},
        {**good, "unknown": 1},
    ]
    for data in bad:
        with pytest.raises(process.WorkerLost):
            process.checked_result(data, limit)
    many = {
        "variables": [{"name": f"t{i}", "type": "table"} for i in range(SQL_STATE_MAX_ITEMS + 1)]
    }
    with pytest.raises(process.WorkerLost):
        process.checked_state(many)
    with pytest.raises(process.WorkerLost):
        process.checked_state({"variables": [{"name": "n" * 10_000, "type": "table"}]})


def test_an_oversized_reply_is_not_read_and_the_worker_replaced(
    env: SqlEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.execute("SELECT final('kept')")
    old = _worker_pid(env)
    monkeypatch.setattr(process, "reply_max_bytes", lambda limit_chars: 16)
    result = env.execute("SELECT 'a reply longer than sixteen bytes' AS s")
    monkeypatch.undo()
    assert result.restarted and result.error is not None and "bytes" in result.error
    assert attack("sql", _worker_pid(env) != old and _works(env))
    assert env.read_state().answer == "kept"  # the answer lives on the host


def test_a_worker_that_stops_answering_is_killed_and_replaced(
    canaries: Canaries, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process, "SQL_WORKER_KILL_GRACE_S", 0.5)
    with _env(exec_timeout_s=1.0) as env:
        env.execute("SELECT final('kept')")
        old = _worker_pid(env)
        os.kill(old, signal.SIGSTOP)  # as a statement stuck where interrupt() cannot reach
        started = time.monotonic()
        result = env.execute("SELECT 1")
        waited = time.monotonic() - started
        assert (
            result.restarted and result.timed_out and waited < 1.0 + 0.5 + 5.0
        )  # limit, grace, a restart
        assert "tables and variables are lost" in (result.error or "")
        assert attack("sql", _worker_pid(env) != old and _works(env) and host_alive())
        assert env.read_state().answer == "kept"


def test_a_worker_killed_mid_statement_is_replaced(env: SqlEnvironment) -> None:
    pid = _worker_pid(env)
    threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()  # as the OOM killer would
    result = env.execute(env.contract.loop_forever)
    assert result.restarted and result.error is not None and "signal 9" in result.error
    assert attack("sql", _works(env) and host_alive())


def test_a_run_survives_every_attack_and_answers(
    canaries: Canaries, capfd: pytest.CaptureFixture[str]
) -> None:
    attacks = [
        "SELECT repeat('x', 2e9::BIGINT) AS s",
        "SELECT error(repeat(repeat('e', 1000000), 300))",
        f"SELECT list({BIG}) AS l FROM range(4)",
        f"SELECT * FROM read_text('{canaries.secret_file}')",
        f"SELECT * FROM read_text('{canaries.listener.url}')",
    ]
    blocks = [f"```sql\n{sql}\n```" for sql in [*attacks, "SELECT final('ok')"]]
    warm = ScriptedModel(blocks[-1:])  # imports and first calls, before measuring
    RLM(warm.model, backend="sql", backend_config=SMALL).completion("Warm up.", "a")
    root = ScriptedModel(blocks)
    with HostMemory() as host:
        result = RLM(root.model, backend="sql", backend_config=SMALL).completion("Go.", "a\nb")
    out = capfd.readouterr()
    executed = [e for e in result.trajectory if isinstance(e, CodeExecuted)]
    seen = "".join(str(m) for call in root.calls for m in call)
    blocked = (
        result.stop_reason == StopReason.ANSWERED
        and result.answer == "ok"
        and all(e.error is not None and len(e.error) <= ERROR_MAX for e in executed[:-1])
        and not canaries.leaked_in(seen)
        and host.growth < HOST_GROWTH_MAX_BYTES
        and not out.out
        and canaries.listener.connections == 0
    )
    assert attack("sql", blocked), (host.growth, [e.error for e in executed])
