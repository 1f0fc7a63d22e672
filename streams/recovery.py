"""A fix for Faust losing source records when table recovery completes.

The bug (faust-streaming 0.15.3, seen on every worker start with records waiting and a table
to recover): ``Recovery`` resumes the flow (``app.flow_control.resume()``, ``consumer.
resume_flow()``) to read the changelogs; when they are read, ``on_recovery_completed`` resumes
the source partitions, *awaits* ``consumer.perform_seek()``, and only then calls
``app.flow_control.resume()`` again. Flow is already active during that await, so the fetcher
hands source records to the agents' stream queues (their read offsets move past them); the
second ``resume()`` then clears every ``clear_on_resume`` queue (mode's ``FlowControlEvent``
clears on *every* resume), dropping the records still waiting there. They are never processed
and never acked, so the committed offset of their partitions stops for good (Faust only commits
up to the first unacked offset), and after a restart they are redelivered slowly. Measured: 1-2
records per partition dropped in ~2 of 5 starts, at the offsets buffered at that moment.

The fix: clear the queues only when ``resume()`` actually ends a suspension. What clearing is
for, records buffered for partitions that a rebalance then revoked, only exists after
``suspend()`` (which Faust calls on every revocation, together with an explicit ``clear()``);
a ``resume()`` while flow is already active has nothing stale to drop, only records fetched for
partitions this worker owns, in order, which the agents must see. Every suspended->active
transition behaves exactly as before. A record delivered twice (the seek can rewind to the
committed offset after some were fetched) is processed again, which at-least-once allows, and
acked once (Faust's ack keeps one entry per offset).
"""

from __future__ import annotations

from mode.utils.queues import FlowControlEvent

FIXES_FAUST_VERSION = "0.15.3"
"""The faust-streaming release this patch was written against and verified on: a test fails when
the installed one differs, so the patch is re-checked (dropped if fixed upstream) on upgrade."""


class ResumeKeepsBuffers(FlowControlEvent):
    """``FlowControlEvent`` whose ``resume()`` is a no-op (no clearing) when not suspended."""

    def resume(self) -> None:
        if self.is_active():
            return
        super().resume()
