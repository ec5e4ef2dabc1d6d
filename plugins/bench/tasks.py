"""The built-in benchmark tasks (registered through the ``register_tasks``
hook by :mod:`polyrlm.plugins.bench.plugin`, like any plugin's)."""

from __future__ import annotations

from polyrlm.plugins.bench.analyst import LahmanTask, NycflightsTask, TpchTask
from polyrlm.plugins.bench.codeqa import CodeqaTask
from polyrlm.plugins.bench.hotpotqa import HotpotqaTask
from polyrlm.plugins.bench.multihop import MultihopTask
from polyrlm.plugins.bench.oolong import OolongTask
from polyrlm.plugins.bench.oolong_pairs import OolongPairsTask
from polyrlm.plugins.bench.ruler import RulerNiahMultikeyTask, RulerNiahSingleTask, RulerVtTask
from polyrlm.plugins.bench.sniah import SniahTask
from polyrlm.plugins.bench.task import Task

__all__ = ["builtin_tasks"]


def builtin_tasks() -> list[Task]:
    return [
        SniahTask(),
        OolongTask(),
        OolongPairsTask(),
        CodeqaTask(),
        MultihopTask(),
        HotpotqaTask(),
        RulerNiahSingleTask(),
        RulerNiahMultikeyTask(),
        RulerVtTask(),
        NycflightsTask(),
        LahmanTask(),
        TpchTask(),
    ]
