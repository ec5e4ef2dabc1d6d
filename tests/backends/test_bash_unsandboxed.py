"""The bash backend without its sandbox: the contract suite still holds, and
the backend says plainly that it is unsandboxed."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator

import pytest

from polyrlm import sandbox
from polyrlm.backends.bash.environment import BashEnvironment
from polyrlm.errors import ConfigError
from polyrlm.registry import Registry, plugin_manager
from polyrlm.testing.contract import EchoSubCalls, EnvFactory, EnvironmentContract, opened_envs


class TestUnsandboxedContract(EnvironmentContract):
    """The whole contract suite, with ``sandbox=False``."""

    @pytest.fixture
    def make_env(self) -> Iterator[EnvFactory]:
        with opened_envs(BashEnvironment, sandbox=False) as factory:
            yield factory

    def test_class_attributes(self) -> None:  # type: ignore[override]
        with BashEnvironment(EchoSubCalls(), BashEnvironment.Config(sandbox=False)) as env:
            assert env.name == "bash" and env.fence_tags[0] == "bash"
            assert env.sandboxed is False and isinstance(BashEnvironment.sandboxed, bool)


@pytest.fixture
def no_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    which = shutil.which
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    monkeypatch.setattr(sandbox, "_warned", set())
    monkeypatch.setattr(
        "shutil.which", lambda name, *a, **k: None if name == "bwrap" else which(name, *a, **k)
    )


def test_without_bwrap_it_says_it_is_unsandboxed(
    no_bwrap: None, caplog: pytest.LogCaptureFixture
) -> None:
    assert BashEnvironment.sandboxed is False
    with caplog.at_level(logging.WARNING), BashEnvironment(EchoSubCalls()) as env:
        env.load_context("x")
        assert env.sandboxed is False
        assert "NOT sandboxed" in env.prompt_guide()
        assert env.execute("echo $CONTEXT").output.startswith(str(env.dirs.context))
    assert "bubblewrap (bwrap) is not installed" in caplog.text
    assert "NOT sandboxed" in caplog.text
    spec = Registry(plugin_manager()).specs()["bash"]
    assert "NOT sandboxed" in spec.description


def test_sandbox_true_without_bwrap_is_refused(no_bwrap: None) -> None:
    with pytest.raises(ConfigError, match="needs bubblewrap"):
        BashEnvironment(EchoSubCalls(), BashEnvironment.Config(sandbox=True))


def test_choosing_unsandboxed_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING),
        BashEnvironment(EchoSubCalls(), BashEnvironment.Config(sandbox=False)) as env,
    ):
        assert env.sandboxed is False
    assert not caplog.text


def test_interrupt_grace_must_be_below_the_core_grace() -> None:
    with pytest.raises(ValueError, match="interrupt_grace_s"):
        BashEnvironment.Config(interrupt_grace_s=20)
