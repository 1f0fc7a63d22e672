"""ClickHouse inserts that fail on demand, inside a stack started by a test (``own_stack``).

Python imports ``sitecustomize`` at start-up from ``PYTHONPATH``: a test that puts this directory
there and names a file in ``EP_TEST_CLICKHOUSE_DOWN_FILE`` makes every ClickHouse insert of that
stack's processes fail, while the file exists, the way an unreachable server fails them
(clickhouse-connect's ``OperationalError``). Nothing else of the stack is touched, and without
the variable this does nothing. ``tests/e2e/test_sink_faults.py`` wraps its own client instead,
for the sink it runs in the test process; this is the same fault for ``eventpipe dev``.
"""

from __future__ import annotations

import os
from typing import Any

_DOWN_FILE = os.environ.get("EP_TEST_CLICKHOUSE_DOWN_FILE")


def _failing_while_down(cls: type, name: str) -> None:
    real = getattr(cls, name)

    def insert(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _DOWN_FILE and os.path.exists(_DOWN_FILE):
            raise OperationalError("injected: ClickHouse unreachable (connection refused)")
        return real(self, *args, **kwargs)

    setattr(cls, name, insert)


if _DOWN_FILE:
    from clickhouse_connect.driver._backendclient import SyncBackendClient
    from clickhouse_connect.driver.exceptions import OperationalError

    for _name in ("insert", "raw_insert"):
        _failing_while_down(SyncBackendClient, _name)
