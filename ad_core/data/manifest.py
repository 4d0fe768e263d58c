"""``manifest.csv``: where each image of a folder came from (``from-bag``, the review queue).

Rows are appended; a row may bring columns the file does not have yet, so the header is the union
of all columns, and the file is rewritten whole through a temporary file (never half-written).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

from ad_core.fileio import write_bytes_atomic

NAME = "manifest.csv"


def read_manifest(folder: str | Path) -> list[dict[str, str]]:
    """The rows of ``folder/manifest.csv`` (empty when there is none)."""
    path = Path(folder) / NAME
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_manifest(folder: str | Path, rows: Iterable[dict], first: tuple[str, ...] = ("file",)) -> Path | None:
    """Write ``folder/manifest.csv`` with exactly ``rows`` (columns: their union, ``first`` leading); none: removed."""
    folder = Path(folder)
    rows = [{k: ("" if v is None else v) for k, v in r.items()} for r in rows]
    if not rows:
        (folder / NAME).unlink(missing_ok=True)
        return None
    fields = list(first)
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(folder / NAME, buf.getvalue().encode())
    return folder / NAME


def append_manifest(folder: str | Path, rows: Iterable[dict], first: tuple[str, ...] = ("file",)) -> Path | None:
    """Append ``rows`` to ``folder/manifest.csv`` (a row may bring new columns)."""
    return write_manifest(folder, [*read_manifest(folder), *rows], first)
