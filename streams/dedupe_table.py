"""The dedupe table: a Faust table that forgets keys past the window (``streams.dedupe.Expiry``).

Three parts keep it bounded, each where Faust or Kafka can do it:

* while the worker runs, the agent calls :meth:`DedupeTable.sweep` after each batch: the keys
  that left the window at their partition's horizon get a tombstone on the changelog (through
  the outbox, to the partition the entry was written to) and leave the store once it is
  acknowledged. A compacting Kafka then drops their entries; a restart on a broker that never
  compacts (Tansu) reads the tombstone and does not keep the key;
* when a partition is recovered (a restart, a rebalance), entries
  already out of the window are not kept (:func:`recover`, for records Faust delivers and for
  records read in bulk, ``streams.bulk_recovery``): a key that left the window while no worker
  ran is forgotten even though no tombstone was written;
* on a real Kafka the changelog is also ``compact,delete`` with a retention past the window
  (``streams.changelog``), for the entries no tombstone ever covered.

The store is Faust's in-memory one (``streams.app``). Entries are written by the outbox's
``raw_update`` and recovered here, never through Faust's ``table[key] = value``: Faust's
``_key_partition`` map is not kept, :class:`Expiry` knows each key's partition instead, and
:meth:`DedupeTable.on_recovery_completed` drops the keys of partitions this worker lost.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

import faust
import structlog
from confluent_kafka import Message
from faust.types import TP, EventT

from streams.changelog import Entry, event_entries, record_entries
from streams.dedupe import Expiry
from streams.outbox import Outbox

log = structlog.get_logger(__name__)


class DedupeTable(faust.Table):  # type: ignore[type-arg]  # Faust: Table[KT, VT]
    """Dedupe key (bytes) -> the first ``received_at`` (ms), forgetting keys past the window."""

    def __init__(self, *args: Any, expiry: Expiry, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.expiry = expiry

    def live_keys(self) -> int:
        return len(self.data)

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]]) -> None:
        """Recover the records Faust's recovery delivers (:func:`recover`)."""
        recover(self.data, self.expiry, event_entries(batch))

    def apply_records(self, records: Iterable[Message]) -> None:
        """Recover records read in bulk (``streams.bulk_recovery``, :func:`recover`)."""
        recover(self.data, self.expiry, record_entries(records, self.value_serializer))

    def observe_tail(self, records: Iterable[Message]) -> None:
        """Start each partition's horizon at the newest entry among the last records of its
        changelog, before recovering it in bulk: entries already out of the window are then
        dropped batch by batch as they are read, not kept until the newest entries arrive. The
        horizon only moves forward, and recovery would reach this one by its end, so what is
        kept is the same; what changes is the peak memory of a restart onto a changelog that
        holds more than the window (``python -m bench --only state``, its expired run)."""
        for partition, _, _, first_ms in record_entries(records, self.value_serializer):
            if isinstance(first_ms, int):  # not a tombstone
                self.expiry.observe(partition, first_ms)

    async def sweep(self, outbox: Outbox, partitions: Iterable[int]) -> int:
        """Tombstone the keys of ``partitions`` that left the window; return how many.

        Call it only between batches (the agent does, after each flush): the tombstones must
        follow the entries they delete on the changelog, and a batch must not see a key that
        its tombstone's flush is about to remove.
        """
        forgotten = 0
        for partition, key, first_ms in self.expiry.due(partitions):
            if outbox.get(self, key) == first_ms:  # not stored again since
                outbox.forget(self, key, partition)
                forgotten += 1
        if forgotten:
            await outbox.flush()
        return forgotten

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """Forget the keys of partitions this worker no longer holds (their new owner recovers
        them from the changelog; if they come back, so does this worker)."""
        topic = self.changelog_topic_name
        kept = {tp.partition for tp in active_tps | standby_tps if tp.topic == topic}
        store = self.data
        for partition in self.expiry.partitions() - kept:
            for key, first_ms in self.expiry.drop(partition):
                if store.get(key) == first_ms:
                    del store[key]
        await super().on_recovery_completed(active_tps, standby_tps)


def recover(
    store: MutableMapping[bytes, int],
    expiry: Expiry,
    entries: Iterable[Entry],
) -> None:
    """Apply changelog entries in order, as the memory store would (a tombstone deletes), except
    entries out of the window at their partition's horizon (which recovery advances as it
    reads). The one rule, however the records were read."""
    touched: set[int] = set()
    for partition, key, raw, first_ms in entries:
        if raw is None:
            store.pop(key, None)
            continue
        if not isinstance(first_ms, int):  # never written by the outbox
            log.warning("dedupe changelog entry ignored", partition=partition, value=first_ms)
            continue
        store[key] = first_ms
        expiry.track(partition, key, first_ms)
        touched.add(partition)
    for _, key, first_ms in expiry.due(touched):
        if store.get(key) == first_ms:  # not stored again since
            del store[key]
