"""Event ids: derived ones are stable, random ones never repeat (across a fork too)."""

from __future__ import annotations

import os

from eventpipe.ids import dedupe_key, derived_event_id, event_id_for, random_event_id


def test_derived_ids_are_stable_and_come_from_the_dedupe_key() -> None:
    # Pinned: a changed derivation would give a retried event a new id, and a second row.
    eid = event_id_for("shop", "api", "e1")
    assert eid == "evt_dloqrhnzx7vbzq455gf3h7uf"
    assert dedupe_key("shop", "api", "e1") == "shop\x1fapi\x1fe1"
    assert eid == derived_event_id(dedupe_key("shop", "api", "e1"))
    assert len(eid) == len("evt_") + 24


def test_random_ids_never_repeat_across_refills() -> None:
    ids = [random_event_id() for _ in range(3 * 4096 + 7)]  # three buffer refills
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("evt_") and len(i) == 28 for i in ids)
    assert set("".join(i[4:] for i in ids)) == set("abcdefghijklmnopqrstuvwxyz234567")


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    random_event_id()  # the buffer now holds the parent's next ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its next ids and leave at once
        os.write(write, ",".join(random_event_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child = set(os.read(read, 1 << 16).decode().split(","))
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    parent = {random_event_id() for _ in range(50)}
    assert len(child) == 50
    assert not child & parent
