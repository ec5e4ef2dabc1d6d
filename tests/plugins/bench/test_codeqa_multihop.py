"""CodeQA answers checked against the library itself (pyclbr, inspect), and
multi-hop answers against the facts parsed back out of the documents."""

from __future__ import annotations

import importlib
import inspect
import pyclbr
import re
import warnings
from typing import Any

import pytest

from polyrlm.plugins.bench.multihop import RELATIONS
from polyrlm.plugins.bench.task import Instance, get_task

#: Modules never imported by these tests (they act on import).
NO_IMPORT = {"antigravity", "this", "__hello__", "__phello__"}


def browse(module: str) -> dict[str, Any] | None:
    """pyclbr's view of a module; None where pyclbr itself fails (it follows
    imports, and trips over some relative ones inside importlib)."""
    with warnings.catch_warnings():  # finding a submodule imports its (deprecated) package
        warnings.simplefilter("ignore")
        try:
            return dict(pyclbr.readmodule_ex(module))
        except (ImportError, ValueError, SyntaxError):
            return None


def codeqa_instances(kind: str, want: int) -> list[Instance]:
    """The first ``want`` questions of ``kind`` that pyclbr can check."""
    task = get_task("codeqa")
    out = []
    for seed in range(200):
        instance = task.generate(seed, 20_000)
        p = instance.params
        if p["kind"] != kind or p["module"] in NO_IMPORT:
            continue
        modules = list(p["options"].values()) if kind == "defines" else [p["module"]]
        if kind == "override" or all(browse(m) is not None for m in modules):
            out.append(instance)
        if len(out) == want:
            return out
    raise AssertionError(f"fewer than {want} {kind} questions in 200 seeds")


def tree(module: str) -> dict[str, Any]:
    found = browse(module)
    assert found is not None
    return found


def answer(instance: Instance) -> str:
    text: str = instance.params["options"][instance.expected]
    return text


def test_codeqa_defines_answers_agree_with_pyclbr() -> None:
    for instance in codeqa_instances("defines", 4):
        name, right = instance.params["name"], answer(instance)
        defined = tree(right)
        assert name in defined and defined[name].module == right
        for letter, other in instance.params["options"].items():
            if letter != instance.expected:
                found = tree(other).get(name)
                assert found is None or found.module != other, (name, other)
        assert f"##### module {right} (file " in str(instance.context)


def test_codeqa_function_counts_agree_with_pyclbr() -> None:
    for instance in codeqa_instances("count", 4):
        module = instance.params["module"]
        functions = {
            n
            for n, o in tree(module).items()
            if isinstance(o, pyclbr.Function) and o.module == module
        }
        assert int(answer(instance)) == len(functions), module


def test_codeqa_overrides_agree_with_the_real_mro() -> None:
    for instance in codeqa_instances("override", 3):
        p = instance.params
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(p["module"])
        cls = getattr(module, p["class"])
        assert p["method"] in vars(cls)
        owner = next(c for c in inspect.getmro(cls)[1:] if p["method"] in vars(c))
        assert owner.__name__ == answer(instance), (p["module"], p["class"], p["method"])


def test_codeqa_question_lists_four_distinct_options() -> None:
    instance = get_task("codeqa").generate(0, 8_000)
    options = instance.params["options"]
    assert sorted(options) == ["A", "B", "C", "D"] and len(set(options.values())) == 4
    for letter, text in options.items():
        assert f"{letter}) {text}" in instance.question
    assert instance.meta["python"] and instance.expected in options


def facts(instance: Instance) -> dict[str, dict[str, list[str]]]:
    """Every fact sentence (a line of its own), per relation: subject -> objects."""
    assert isinstance(instance.context, list)
    out: dict[str, dict[str, list[str]]] = {r: {} for r in RELATIONS}
    for doc in instance.context:
        for line in doc.splitlines():
            for relation, (before, between) in RELATIONS.items():
                m = re.fullmatch(
                    re.escape(before) + r"(.+?)" + re.escape(between) + r"(\w+)\.", line
                )
                if m:
                    out[relation].setdefault(m.group(1), []).append(m.group(2))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_multihop_answer_follows_the_facts_in_the_documents(seed: int) -> None:
    instance = get_task("multihop").generate(seed, 8_000)
    known = facts(instance)
    entity = instance.params["start"]
    docs_used = set()
    for relation in instance.meta["chain"]:
        objects = known[relation][entity]
        assert len(objects) == 1, (relation, entity, objects)  # one fact, no contradiction
        before, between = RELATIONS[relation]
        line = f"{before}{entity}{between}{objects[0]}."
        docs_used |= {i for i, d in enumerate(instance.context) if line in d.splitlines()}
        entity = objects[0]
    assert entity == instance.expected
    assert len(instance.meta["chain"]) in (2, 3)
    assert len(docs_used) >= 2  # the chain is spread over documents
    person = instance.params["start"]
    decoys = [line for d in instance.context for line in d.splitlines() if person in line]
    assert len(decoys) > len(instance.meta["chain"]) - 1  # decoys name the person too
    assert get_task("multihop").score(instance, f" {entity}. ") == 1.0
    assert get_task("multihop").score(instance, "Someone Else") == 0.0


def test_codeqa_context_is_the_installed_library_verbatim() -> None:
    """Every section of the context is an installed standard-library file,
    byte for byte as Python decodes it, under its own header."""
    import hashlib
    import tokenize

    from polyrlm.plugins.bench.codeqa_source import stdlib_root

    instance = get_task("codeqa").generate(11, 20_000)
    parts = re.split(r"^##### module (\S+) \(file (\S+)\) #####\n", instance.context, flags=re.M)
    assert parts[0] == ""
    sections = list(zip(parts[1::3], parts[2::3], parts[3::3], strict=True))
    assert [name for name, _, _ in sections] == instance.meta["modules"]
    for number, (_, path, text) in enumerate(sections, 1):
        with tokenize.open(stdlib_root() / path) as f:
            source = f.read()
        # Sections are joined with one newline: every one but the last ends with it.
        expected = source if number == len(sections) else source + "\n"
        assert hashlib.sha256(text.encode()).digest() == hashlib.sha256(expected.encode()).digest()
