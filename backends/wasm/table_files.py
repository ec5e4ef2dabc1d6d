"""A pandas DataFrame as a folder of column files: written on the host
(:func:`write_table`), read in the guest (:func:`read_table`). The guest
gets this file's source as the private module ``_polyrlm_tables``, so it
imports nothing of polyrlm, and numpy and pandas only when a table is read.

Each column is one to three files the guest reads at C speed (``np.load``,
``pickle.load``), so loading takes about the memory of the frame itself
and a second or so. (pandas' table JSON, the format before this one, took
many times that: TPC-H ``lineitem`` at scale factor 0.1, 600,572 rows, did
not fit in 4 GiB of guest memory; it now loads in about 160 MiB.) The
frame read back equals the one written: the same columns, dtypes, values
(NaN, None, NA and NaT each as it was), index and column labels.

``schema.json`` is ``{"format": 1, "rows": n, "columns": [array, ...],
"index": index, "labels": index}``, ``labels`` being the frame's column
labels. An index is ``{"range": [start, stop, step], "names": [name]}`` or
``{"levels": [array, ...], "names": [name, ...], "multi": bool}``; a name
that is not a JSON scalar crosses as its ``str``. An array is one of:

* ``{"as": "numpy", "file": F}``: a numpy bool, int, uint, float, complex,
  ``datetime64`` or ``timedelta64`` column, as ``np.save`` writes it (no
  pickle): dtype and bits exact;
* ``{"as": "datetime_tz", "file": F, "tz": zone}``: a tz-aware column, its
  UTC times as a ``datetime64`` file; ``zone`` is an IANA name, or
  ``{"offset_s": seconds}`` for a fixed offset;
* ``{"as": "masked", "dtype": D, "file": F, "mask": M}``: a nullable
  ``Int*``, ``UInt*``, ``Float*`` or ``boolean`` column: its values and its
  mask, two numpy files;
* ``{"as": "category", "file": F, "categories": array, "ordered": bool}``:
  the codes as a numpy file (-1: missing) and the categories;
* ``{"as": "objects", "dtype": D, "file": P, "codes": C}``: a ``str`` or
  ``string`` column, an ``object`` one, or one of another extension dtype
  (``period``, ``interval``, ``Sparse``), as a pickled object array ``P``
  of its values: ``None``, NaN, ``Decimal``, ``date``, ``bytes``, lists and
  the like come back as they were. String columns, and object columns
  whose values are all of one type of :data:`_DISTINCT_TYPES`, have
  ``codes`` (a numpy file of int32 or int64; -1: missing) and ``P`` holds
  each distinct value once: a repeated value costs the guest one object,
  and one ``Decimal`` to build (its decimal module is pure Python). Values
  must be of types the guest has (:data:`GUEST_VALUE_MODULES`), else
  :class:`TypeError`. A dtype the guest cannot make (an Arrow-backed one:
  it has no pyarrow) stays ``object``.

Only the host writes pickles and only the guest reads them: the host never
unpickles what a sandbox made.
"""

from __future__ import annotations

import datetime
import json
import os
import pickle
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["GUEST_VALUE_MODULES", "SCHEMA_NAME", "TABLE_FORMAT", "read_table", "write_table"]

#: The table format's number, in ``schema.json``.
TABLE_FORMAT = 1
#: The table's description in its folder.
SCHEMA_NAME = "schema.json"
#: Top-level modules whose types an ``object`` column may hold: the guest has them all.
GUEST_VALUE_MODULES = frozenset(
    {"builtins", "collections", "datetime", "decimal", "fractions", "ipaddress", "uuid"}
    | {"zoneinfo", "numpy", "pandas"}
)
#: Pickle protocol of the object files (both sides read 5: Python 3.8 and later).
_PICKLE_PROTOCOL = 5
#: Types of object values told apart by equality (a Decimal by its str as well),
#: so that a column of them crosses as each distinct value once and codes.
_DISTINCT_TYPES = frozenset(
    {"builtins.str", "builtins.bytes", "builtins.int", "datetime.date", "decimal.Decimal"}
)
#: numpy kinds saved as they are: bool, int, uint, float, complex, timedelta, datetime.
_NUMPY_KINDS = "biufcmM"


# -- writing (on the host) ----------------------------------------------------


def _save(folder: Path, key: str, array: Any) -> str:
    import numpy as np

    name = f"{key}.npy"
    np.save(folder / name, array, allow_pickle=False)
    return name


def _dump(folder: Path, key: str, objects: Any) -> str:
    name = f"{key}.pkl"
    with open(folder / name, "wb") as f:
        pickle.dump(objects, f, protocol=_PICKLE_PROTOCOL)
    return name


def _zone(tz: Any, where: str) -> Any:
    """A JSON form of ``tz`` that the guest's pandas turns back into it."""
    name = getattr(tz, "key", None) or getattr(tz, "zone", None)  # zoneinfo, pytz
    if isinstance(name, str):
        return name
    if tz is datetime.UTC or str(tz) in ("UTC", "tzutc()"):
        return "UTC"
    offset = tz.utcoffset(None)  # a fixed offset's, else None
    if offset is not None:
        return {"offset_s": offset.total_seconds()}
    raise TypeError(f"{where} has a time zone without an IANA name ({tz!r}); use zoneinfo")


def _checked_objects(values: Any, where: str) -> Any:
    """``values`` as an object array, its types ones the guest has."""
    import numpy as np

    objects = np.asarray(values, dtype=object)
    for kind in set(map(type, objects)):
        module = str(getattr(kind, "__module__", "")).split(".")[0]
        if module not in GUEST_VALUE_MODULES:
            raise TypeError(
                f"{where} holds {kind.__module__}.{kind.__qualname__} values, which the "
                "sandbox cannot make; convert the column first (e.g. .astype(str))"
            )
    return objects


def _encode(data: Any, folder: Path, key: str, where: str) -> dict[str, Any]:
    """One column or index level (a Series or an Index) as files in
    ``folder`` named from ``key``; its spec for the schema."""
    import numpy as np
    import pandas as pd

    dtype = data.dtype
    array = data.array
    if isinstance(dtype, np.dtype) and dtype.kind in _NUMPY_KINDS:
        return {"as": "numpy", "file": _save(folder, key, data.to_numpy())}
    if isinstance(dtype, pd.DatetimeTZDtype):
        utc = np.asarray(array.tz_convert(None))
        return {"as": "datetime_tz", "file": _save(folder, key, utc), "tz": _zone(dtype.tz, where)}
    if isinstance(array, pd.arrays.IntegerArray | pd.arrays.FloatingArray | pd.arrays.BooleanArray):
        fill = False if dtype.kind == "b" else 0
        values = array.to_numpy(dtype=dtype.numpy_dtype, na_value=fill)
        mask = np.asarray(array.isna(), dtype=bool)
        spec = {"as": "masked", "dtype": str(dtype), "file": _save(folder, key, values)}
        return spec | {"mask": _save(folder, f"{key}.mask", mask)}
    if isinstance(dtype, pd.CategoricalDtype):
        categories = _encode(dtype.categories, folder, f"{key}.categories", where)
        spec = {"as": "category", "file": _save(folder, key, array.codes)}
        return spec | {"categories": categories, "ordered": bool(dtype.ordered)}
    if isinstance(dtype, pd.StringDtype):
        codes, uniques = pd.factorize(array)
        distinct = uniques.to_numpy(dtype=object, na_value=None)
        return _objects(str(dtype), distinct, codes, folder, key)
    objects = _checked_objects(data.to_numpy(dtype=object), where)
    codes, distinct = _factorized(objects)
    return _objects(str(dtype), distinct, codes, folder, key)


def _factorized(objects: Any) -> tuple[Any, Any]:
    """(codes, distinct values) of an object array whose values (but None)
    are all of one type whose equal values are the same value; else (None,
    ``objects``). A ``Decimal`` is told apart by its ``str`` (1.0 == 1.00)."""
    import numpy as np
    import pandas as pd

    kinds = set(map(type, objects)) - {type(None)}
    kind = kinds.pop() if len(kinds) == 1 else None
    if kind is None or f"{kind.__module__}.{kind.__qualname__}" not in _DISTINCT_TYPES:
        return None, objects
    keys = objects
    if kind.__qualname__ == "Decimal":  # str(None) == "None" is no Decimal's str
        keys = np.array(list(map(str, objects)), dtype=object)
    codes, _ = pd.factorize(keys)  # codes in the order values first appear; -1: None
    seen = codes >= 0
    first = np.full(codes.max(initial=-1) + 1, len(codes))
    np.minimum.at(first, codes[seen], np.flatnonzero(seen))
    return codes, objects[first]


def _objects(dtype: str, distinct: Any, codes: Any, folder: Path, key: str) -> dict[str, Any]:
    import numpy as np

    spec = {"as": "objects", "dtype": dtype, "file": _dump(folder, f"{key}.objects", distinct)}
    if codes is None:
        return spec
    small = len(distinct) < 2**31
    return spec | {
        "codes": _save(folder, f"{key}.codes", codes.astype(np.int32 if small else np.int64))
    }


def _name(name: Any) -> Any:
    """``name`` as a JSON scalar (numpy scalars made plain), else its ``str``."""
    if hasattr(name, "item") and not isinstance(name, str | bytes):
        name = name.item()
    return name if name is None or isinstance(name, str | int | float) else str(name)


def _encode_index(index: Any, folder: Path, key: str, where: str) -> dict[str, Any]:
    import pandas as pd

    names = [_name(n) for n in index.names]
    if isinstance(index, pd.RangeIndex):
        return {"range": [index.start, index.stop, index.step], "names": names}
    levels = [
        _encode(index.get_level_values(i), folder, f"{key}{i}", f"{where} (level {i})")
        for i in range(index.nlevels)
    ]
    return {"levels": levels, "names": names, "multi": isinstance(index, pd.MultiIndex)}


def write_table(frame: Any, folder: Path) -> None:
    """Write the DataFrame ``frame`` into the new folder ``folder``. Raises
    :class:`TypeError` for values the guest cannot make."""
    folder.mkdir()
    columns = []
    for number in range(frame.shape[1]):
        column = frame.iloc[:, number]
        where = f"column {column.name!r}"
        columns.append(_encode(column, folder, f"c{number}", where))
    schema = {
        "format": TABLE_FORMAT,
        "rows": len(frame),
        "columns": columns,
        "index": _encode_index(frame.index, folder, "i", "the index"),
        "labels": _encode_index(frame.columns, folder, "l", "the column labels"),
    }
    (folder / SCHEMA_NAME).write_text(json.dumps(schema, ensure_ascii=True), encoding="ascii")


# -- reading (in the guest) ---------------------------------------------------


def _load(folder: str, name: str) -> Any:
    import numpy as np

    return np.load(os.path.join(folder, name), allow_pickle=False)


def _unpickle(folder: str, name: str) -> Any:
    with open(os.path.join(folder, name), "rb") as f:
        return pickle.load(f)


def _dtype_or_object(name: str) -> Any:
    import pandas as pd

    try:
        return pd.api.types.pandas_dtype(name)
    except (ImportError, TypeError, ValueError):  # e.g. an Arrow dtype: no pyarrow here
        return None


def _decode(spec: dict[str, Any], folder: str) -> Any:
    """The array (numpy or pandas extension) that ``spec`` describes."""
    import numpy as np
    import pandas as pd

    how = spec["as"]
    if how == "numpy":
        return _load(folder, spec["file"])
    if how == "datetime_tz":
        tz = spec["tz"]
        if isinstance(tz, dict):
            tz = datetime.timezone(datetime.timedelta(seconds=tz["offset_s"]))
        utc = pd.array(_load(folder, spec["file"]))
        return utc.tz_localize("UTC").tz_convert(tz)
    if how == "masked":
        values, mask = _load(folder, spec["file"]), _load(folder, spec["mask"])
        if values.dtype.kind == "b":
            return pd.arrays.BooleanArray(values, mask)
        if values.dtype.kind == "f":
            return pd.arrays.FloatingArray(values, mask)
        return pd.arrays.IntegerArray(values, mask)
    if how == "category":
        categories = pd.Index(_decode(spec["categories"], folder))
        codes = _load(folder, spec["file"])
        return pd.Categorical.from_codes(codes, categories=categories, ordered=spec["ordered"])
    if how == "objects":
        objects = _unpickle(folder, spec["file"])
        if "codes" in spec:  # each distinct value once; code -1: None
            objects = np.concatenate([objects, np.array([None], dtype=object)])
            objects = objects[_load(folder, spec["codes"])]
        dtype = _dtype_or_object(spec["dtype"])
        if dtype is None or dtype == np.dtype(object):
            return objects
        return pd.array(objects, dtype=dtype)
    raise ValueError(f"unknown column encoding {how!r}")


def _decode_index(spec: dict[str, Any], folder: str) -> Any:
    import pandas as pd

    names = spec["names"]
    if "range" in spec:
        start, stop, step = spec["range"]
        return pd.RangeIndex(start, stop, step, name=names[0])
    levels = [_decode(level, folder) for level in spec["levels"]]
    if not spec["multi"]:
        return pd.Index(levels[0], dtype=levels[0].dtype, name=names[0])
    return pd.MultiIndex.from_arrays(levels, names=names)


def read_table(folder: str) -> Any:
    """The DataFrame :func:`write_table` wrote into ``folder``."""
    import numpy as np
    import pandas as pd

    with open(os.path.join(folder, SCHEMA_NAME), encoding="ascii") as f:
        schema = json.load(f)
    if schema.get("format") != TABLE_FORMAT:
        raise ValueError(f"table format {schema.get('format')!r}, not {TABLE_FORMAT}")
    data = {}
    for number, spec in enumerate(schema["columns"]):
        column = _decode(spec, folder)
        if isinstance(column, np.ndarray) and column.dtype == object:  # kept, not inferred str
            column = pd.Series(column, dtype=object, copy=False)
        data[number] = column
    rows = pd.RangeIndex(schema["rows"])
    frame = pd.DataFrame(data, copy=False) if data else pd.DataFrame(index=rows)
    frame.index = _decode_index(schema["index"], folder)
    frame.columns = _decode_index(schema["labels"], folder)
    return frame
