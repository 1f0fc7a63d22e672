"""The event catalog (document 002), fed by the pipeline itself: resources, the List Resources
filter grammar, paging, and the store that reads and writes them in ClickHouse."""

from __future__ import annotations

from eventpipe.catalog.store import Catalog

__all__ = ["Catalog"]
