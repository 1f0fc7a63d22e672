"""The Avro schemas, as versioned ``<record>.v<N>.avsc`` files: this package only locates them."""

from __future__ import annotations

from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent


def schema_files() -> list[Path]:
    return sorted(SCHEMA_DIR.glob("*.avsc"))
