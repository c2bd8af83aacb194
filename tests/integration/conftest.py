"""Fixtures shared by the integration test modules.

`stack`: ONE scale-out stack (tests/stack_helpers.py: PostgreSQL, SeaweedFS S3, the MLflow and
Prefect servers, started from nothing by bertops.stack) for every module that asks for it
(test_stack.py, test_worker_route.py), instead of one per module: starting and stopping a stack
takes ~35 s on 2 loaded cores. It is stopped (processes and state folder) right after the last test
that uses it, not at the end of the session, so it does not idle under the tests that follow.
test_stack.py's last test stops it and starts it again (the data kept); later users get the
restarted stack (same ports, credentials and data). What each module leaves on the servers is kept
apart by name (model names, experiments, S3 keys), so the modules pass in any order.
test_stack_bind.py starts its own stack: it binds every interface, which this one must not.
"""

from __future__ import annotations

import pytest

_USERS: dict[str, object] = {}  # "last": the last collected test that uses `stack`
_RUNNING: list = []  # the shared stack while it runs


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: the items that will run
def pytest_collection_modifyitems(session, config, items):
    users = [item for item in items if "stack" in getattr(item, "fixturenames", ())]
    _USERS["last"] = users[-1] if users else None


def _stop_shared_stack() -> None:
    from tests.stack_helpers import stop_stack

    while _RUNNING:
        stop_stack(_RUNNING.pop())


@pytest.hookimpl(trylast=True)  # after pytest's own teardown of this test's fixtures (route's workers first)
def pytest_runtest_teardown(item, nextitem):
    if item is _USERS.get("last"):  # nothing after this test needs the stack
        _stop_shared_stack()


@pytest.fixture(scope="session")
def stack():
    """The shared stack (see the module docstring); a tests.stack_helpers.RunningStack."""
    from tests.stack_helpers import start_stack

    _RUNNING.append(start_stack())
    try:
        yield _RUNNING[0]
    finally:
        _stop_shared_stack()
