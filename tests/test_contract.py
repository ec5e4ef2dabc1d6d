"""The backend contract suite, run against every available backend."""

from polyrlm.testing.contract import EnvironmentContract


class TestContract(EnvironmentContract):
    pass
