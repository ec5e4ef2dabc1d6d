"""The viewer page in a real headless Chromium (Debian's, driven by Playwright).

One browser per module. The page is opened from ``file://``, as a user
would open it, with the network of the page itself cut off by its CSP.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from polyrlm import Result
from polyrlm.events import CodeExecuted
from polyrlm.plugins.view import VIEW_TEXT_CHARS, build_tree, write_html
from polyrlm.plugins.view import page as page_module
from tests.plugins.view.test_view import BIG_CHARS, QUESTION, XSS, dumps, hay, recorded_run

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the viewer tests need Debian's chromium "
            "(apt-get install chromium); .ci/run installs it"
        )
    with (
        tempfile.TemporaryDirectory(prefix="polyrlm-view-chromium-") as profile,
        sync_playwright() as pw,
    ):
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    folder = tmp_path_factory.mktemp("viewpage")
    result = recorded_run(folder / "run.jsonl")
    return result, write_html(folder / "run.jsonl", folder / "run.html")


class Opened:
    """A page of the shared browser, with what it raised and every dialog."""

    def __init__(self, context: BrowserContext, path: Path) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page: Page = context.new_page()
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        # A blocked style or script (the page's CSP) is reported on the console.
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("dialog", self._dialog)
        self.page.goto(path.as_uri())

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


@pytest.fixture
def opened(browser: BrowserContext, recorded: tuple[Result, Path]) -> Iterator[Opened]:
    view = Opened(browser, recorded[1])
    yield view
    assert view.errors == [], "the page's script raised or was blocked"
    view.page.close()


def test_top_shows_answer_stop_reason_and_totals(
    opened: Opened, recorded: tuple[Result, Path]
) -> None:
    result, _ = recorded
    page = opened.page
    expect(page.locator("#title")).to_have_text(f"polyrlm run: {QUESTION}")
    expect(page.locator("#summary .answer pre")).to_have_text(str(result.answer))
    expect(page.locator("#summary .stop")).to_have_text("stop reason: answered")
    expect(page.locator("#summary .totals")).to_contain_text("9 calls")
    expect(page.locator("#summary .not-finished")).to_have_count(0)
    badge = "getComputedStyle(document.querySelector('.kind')).color"
    assert page.evaluate(badge) == "rgb(255, 255, 255)"  # the style ran under the CSP


def test_clicking_a_node_shows_its_code_and_output(opened: Opened) -> None:
    page = opened.page
    turn = page.locator("main > .node > .body > .kind-turn").first
    exec_node = turn.locator("> .body > .kind-exec").first
    expect(exec_node).to_be_hidden()
    turn.locator("> .head").click()
    expect(turn.locator("> .body > .section.reply pre")).to_contain_text("llm_batch")
    expect(exec_node).to_be_visible()
    expect(exec_node.locator("> .body")).to_be_hidden()
    exec_node.locator("> .head").click()
    expect(exec_node.locator("> .body > .section.code pre")).to_contain_text("rlm_query(")
    expect(exec_node.locator("> .body > .section.output pre")).to_contain_text("seen delta")
    expect(exec_node.locator("> .body > .kind-batch > .head")).to_contain_text(
        "llm_batch 3 prompts"
    )


def test_large_output_is_collapsed_until_asked(
    opened: Opened, recorded: tuple[Result, Path]
) -> None:
    result, _ = recorded
    outputs = [e.output for e in result.trajectory if isinstance(e, CodeExecuted)]
    (big,) = [o for o in outputs if "z" * BIG_CHARS in o]
    assert len(big) > BIG_CHARS > VIEW_TEXT_CHARS
    page = opened.page
    page.click("#expand")
    output = page.locator(".kind-exec > .body > .section.output").first
    expect(output).to_have_attribute("data-collapsed", "true")
    assert output.locator("pre").text_content() == big[:VIEW_TEXT_CHARS] + "\n…"
    count = page.evaluate("n => n.toLocaleString()", len(big))
    expect(output.locator(".label")).to_have_text(f"output ({count} chars)")
    button = output.locator("button.more")
    expect(button).to_have_text(f"show all {count} chars")
    button.click()
    expect(output).to_have_attribute("data-collapsed", "false")
    assert output.locator("pre").text_content() == big
    expect(button).to_have_text("show less")


def _visible(page: Page, selector: str) -> list[str]:
    """The titles of the nodes matching ``selector`` that are on screen."""
    titles: list[str] = page.locator(selector).evaluate_all(
        "els => els.filter(e => e.checkVisibility())"
        ".map(e => e.querySelector(':scope > .head .title').textContent)"
    )
    return titles


def test_search_counts_shows_matches_and_hides_the_rest(
    opened: Opened, recorded: tuple[Result, Path]
) -> None:
    result, _ = recorded
    tree = build_tree(dumps(result.trajectory))
    nodes = [n for r in tree.runs for n in r.walk()]
    query = "Grandchild"
    matching = [n.title for n in nodes if query.lower() in hay(n)]
    assert len(matching) >= 3  # the child's reply, its code, the sub-call, the answers...
    page = opened.page
    page.fill("#search", query)
    expect(page.locator("#count")).to_have_text(f"{len(matching)} matches")
    assert sorted(_visible(page, ".node.match")) == sorted(matching)
    expect(page.locator(".node.match")).to_have_count(len(matching))
    assert "sub-call: grandchild abc def" in _visible(page, ".kind-call")
    batch = page.locator(".kind-batch")
    expect(batch).to_be_hidden()  # no match in it or under it
    marks = page.locator(".kind-call.match > .body mark")
    expect(marks.first).to_have_text("grandchild")
    page.fill("#search", "no such text anywhere")
    expect(page.locator("#count")).to_have_text("0 matches")
    expect(page.locator("main > .node")).to_be_hidden()
    page.fill("#search", "")
    expect(page.locator("#count")).to_have_text("")
    expect(page.locator("main > .node")).to_be_visible()
    expect(page.locator("mark")).to_have_count(0)


def test_model_markup_shows_as_text_and_never_runs(opened: Opened) -> None:
    page = opened.page
    page.click("#expand")
    expect(page.locator("#summary .answer pre")).to_contain_text(XSS)
    expect(page.locator(".kind-exec .section.output pre").first).to_contain_text(XSS)
    expect(page.locator("#title")).to_contain_text("<img src=x onerror=alert(3)>")
    page.fill("#search", "__pwned")  # marks split the text: still no markup
    expect(page.locator("#count")).not_to_have_text("")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.images.length") == 0
    assert page.evaluate("document.scripts.length") == 2
    assert opened.dialogs == []


def test_torn_trajectory_page_says_the_run_did_not_finish(
    browser: BrowserContext, recorded: tuple[Result, Path], tmp_path: Path
) -> None:
    log = recorded[1].with_suffix(".jsonl")
    lines = log.read_text().splitlines()
    torn = tmp_path / "torn.jsonl"
    torn.write_text("\n".join(lines[: len(lines) // 2]) + "\n" + lines[len(lines) // 2][:30])
    view = Opened(browser, write_html(torn, tmp_path / "torn.html"))
    try:
        expect(view.page.locator("#summary .not-finished")).to_have_text("run did not finish")
        expect(view.page.locator("#summary .stop")).to_have_text("stop reason: run did not finish")
        root_flags = view.page.locator("main > .node > .head .flag")
        expect(root_flags.filter(has_text="run did not finish")).to_have_count(1)
        assert view.errors == []
    finally:
        view.page.close()


def test_a_search_opens_only_the_first_matches(
    browser: BrowserContext,
    recorded: tuple[Result, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(page_module, "VIEW_OPEN_MATCHES", 2)
    view = Opened(browser, write_html(recorded[0].trajectory, tmp_path / "few.html"))
    try:
        tree = build_tree(dumps(recorded[0].trajectory))
        matching = [n for r in tree.runs for n in r.walk() if "seen" in hay(n)]
        assert len(matching) > 2
        view.page.fill("#search", "Seen")
        expect(view.page.locator("#count")).to_have_text(f"{len(matching)} matches")
        # Open: the first two matches, and every match that leads to another.
        leads = [n for n in matching if any("seen" in hay(d) for d in list(n.walk())[1:])]
        expected = len({id(n) for n in [*matching[:2], *leads]})
        assert expected < len(matching)
        opened = view.page.locator(".node.match > .body:not([hidden])")
        expect(opened).to_have_count(expected)
        expect(view.page.locator(".node.match > .head")).to_have_count(len(matching))
        assert view.errors == []
    finally:
        view.page.close()
