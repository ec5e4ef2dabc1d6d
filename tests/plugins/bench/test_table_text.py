"""An instance's context as one text (the ``base`` method's prompt), tables included."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from polyrlm.plugins.bench.table_text import TABLE_TEXT_BATCH_ROWS, context_text


def test_texts_and_documents_are_cut_to_the_limit() -> None:
    assert context_text("abcdef", 4) == "abcd"
    assert context_text(["aaa", "bbb", "ccc"], 100) == "aaa\n\nbbb\n\nccc"
    assert context_text(["aaa", "bbb", "ccc"], 6) == "aaa\n\nb"


def test_tables_are_csv_under_a_header_with_their_row_count(tmp_path: Path) -> None:
    rows = 3 * TABLE_TEXT_BATCH_ROWS + 7
    names = pa.array([f'n, {i} "q"' for i in range(rows)], type=pa.string_view())
    pq.write_table(pa.table({"id": list(range(rows)), "name": names}), tmp_path / "big.parquet")
    (tmp_path / "small.csv").write_text("k,v\n1,x\n2,y\n", encoding="utf-8")
    tables = {"small": tmp_path / "small.csv", "big": tmp_path / "big.parquet"}
    text = context_text(tables, 10**8)
    small, big = text.split("\n\n", 1)
    assert small == "##### table small (2 rows) #####\nk,v\n1,x\n2,y"
    head, body = big.split("\n", 1)
    assert head == f"##### table big ({rows:,} rows) #####"
    parsed = list(csv.reader(io.StringIO(body)))
    assert parsed[0] == ["id", "name"]
    assert len(parsed) == rows + 1  # one header, every row once
    assert parsed[-1] == [str(rows - 1), f'n, {rows - 1} "q"']


def test_a_huge_table_is_not_converted_past_the_limit(tmp_path: Path) -> None:
    rows = 50 * TABLE_TEXT_BATCH_ROWS
    pq.write_table(pa.table({"id": list(range(rows))}), tmp_path / "t.parquet")
    text = context_text({"t": tmp_path / "t.parquet"}, 500)
    assert len(text) == 500
    assert text.startswith(f'##### table t ({rows:,} rows) #####\n"id"\n0\n1\n')
