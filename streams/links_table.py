"""The identity table: (product, anonymous id) -> the linked user id, kept for good.

Faust's table on its in-memory store, with the recovery rule in one function (:func:`recover`)
for the records Faust's recovery delivers and the records read in bulk (``streams.bulk_recovery``):
a link never expires (its changelog is compacted), so this table only grows, and a restart read
it at Faust's ~10k records/s. The rule is the memory store's (a value sets, a tombstone deletes,
each key's partition remembered so the store drops the keys of partitions this worker lost);
the changelog sentinel is not a link, and never an entry (``streams.changelog.Entry``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import faust
from confluent_kafka import Message
from faust.stores.memory import Store
from faust.types import EventT

from streams.changelog import Entry, event_entries, record_entries


class LinksTable(faust.Table):  # type: ignore[type-arg]  # Faust: Table[KT, VT]
    def apply_changelog_batch(self, batch: Iterable[EventT[Any]]) -> None:
        recover(cast(Store[bytes, Any], self.data), event_entries(batch))

    def apply_records(self, records: Iterable[Message]) -> None:
        recover(cast(Store[bytes, Any], self.data), record_entries(records, self.value_serializer))


def recover(store: Store[bytes, Any], entries: Iterable[Entry]) -> None:
    """Apply changelog entries in order to Faust's memory ``store``."""
    data, partitions = store.data, store._key_partition  # what its on_recovery_completed reads
    for partition, key, raw, value in entries:
        if raw is None:
            data.pop(key, None)
            partitions.pop(key, None)
            continue
        data[key] = value
        partitions[key] = partition
