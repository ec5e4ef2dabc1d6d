"""Output of a task comparison: rows averaged over instances, a ``rich``
table, the JSON file and a PNG plot (matplotlib, the ``bench`` extra)."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyrlm.plugins.bench.methods import RunRecord

__all__ = ["PLOT_DPI", "TABLE_WIDTH", "aggregate", "fmt_size", "plot", "print_rows"]

#: Console width used when stdout is not a terminal (files, pipes, tests).
TABLE_WIDTH = 150
#: Resolution of the PNG plot.
PLOT_DPI = 120


def fmt_size(tokens: int) -> str:
    """``8192`` -> ``8.2K``, ``1000000`` -> ``1M``."""
    for unit, scale in (("M", 1_000_000), ("K", 1_000)):
        if tokens >= scale:
            return f"{tokens / scale:.3g}{unit}"
    return str(tokens)


def _label(r: RunRecord) -> str:
    return f"{r.method}:{r.strategy}" if r.strategy else r.method


def aggregate(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per (size, backend, method): means over the instances that ran."""
    groups: dict[tuple[int, str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.size, r.backend, _label(r)), []).append(r)
    rows = []
    for (size, backend, label), runs in groups.items():
        ran = [r for r in runs if r.score is not None]
        statuses = sorted({r.status for r in runs})
        row: dict[str, Any] = {
            "size": size,
            "backend": backend,
            "method": label,
            "instances": len(runs),
            "ran": len(ran),
            "status": ", ".join(statuses),
            "detail": next((r.detail for r in runs if r.detail), ""),
            "note": runs[0].note,
        }
        if ran:
            row.update(
                score=statistics.fmean(r.score or 0.0 for r in ran),
                root_tokens=statistics.fmean(r.root_tokens for r in ran),
                sub_tokens=statistics.fmean(r.sub_tokens for r in ran),
                cost_usd=statistics.fmean(r.cost_usd for r in ran),
                unpriced_calls=sum(r.unpriced_calls for r in ran),
                wall_s=statistics.fmean(r.wall_s for r in ran),
                iterations=statistics.fmean(r.iterations for r in ran),
                sub_calls=statistics.fmean(r.sub_calls for r in ran),
            )
        rows.append(row)
    return rows


def _num(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def print_rows(title: str, rows: Sequence[dict[str, Any]]) -> None:
    """The comparison as a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for name in ("backend", "size", "method"):
        table.add_column(name, no_wrap=True)
    for name in ("score", "root tok", "sub tok", "cost $", "wall s", "iters", "sub-calls"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("status / note")
    for row in rows:
        head = [row["backend"], fmt_size(row["size"]), row["method"]]
        if "score" not in row:
            reason = row["status"] + (f": {row['detail']}" if row["detail"] else "")
            table.add_row(*head, *(["-"] * 7), reason)
            continue
        cost = _num(row["cost_usd"], 4)
        if row["unpriced_calls"]:  # some calls had no price: n/a when none had one
            cost = ("n/a" if row["cost_usd"] == 0 else cost) + "*"
        status = "" if row["status"] == "ok" else row["status"]
        if row["detail"] and row["status"] != "ok":
            status += f": {row['detail']}"
        notes = [n for n in (status, row["note"]) if n]
        table.add_row(
            *head,
            f"{row['score']:.3f}",
            _num(row["root_tokens"]),
            _num(row["sub_tokens"]),
            cost,
            f"{row['wall_s']:.2f}",
            _num(row["iterations"], 1 if row["iterations"] % 1 else 0),
            _num(row["sub_calls"], 1 if row["sub_calls"] % 1 else 0),
            "; ".join(notes),
        )
    console = Console(width=None if sys.stdout.isatty() else TABLE_WIDTH, soft_wrap=False)
    console.print(table)
    if any(row.get("unpriced_calls") for row in rows):
        console.print(
            "* calls to models without a known price (scripted roots, local servers) are not "
            "in the cost"
        )


def plot(path: Path, title: str, rows: Sequence[dict[str, Any]]) -> Path | None:
    """Score, cost and wall time against context size, one line per backend
    and method; None (and a message on stderr) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            'no plot: matplotlib is not installed (pip install "polyrlm[bench]")', file=sys.stderr
        )
        return None
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if "score" in row:
            series.setdefault(f"{row['backend']} {row['method']}", []).append(row)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for name, points in sorted(series.items()):
        points.sort(key=lambda r: r["size"])
        sizes = [p["size"] for p in points]
        for ax, key in zip(axes, ("score", "cost_usd", "wall_s"), strict=True):
            ax.plot(sizes, [p[key] for p in points], marker="o", label=name)
    for ax, label in zip(axes, ("score", "cost (USD)", "wall time (s)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("context size (tokens)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylim(-0.05, 1.05)
    for ax in axes[1:]:
        ax.set_ylim(bottom=0)  # costs and times start at zero
    if series:
        axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)
    return path
