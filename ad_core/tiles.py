"""Tile grids (``"2x2"``): parsed here, without numpy, so that the CLI's flags and the forms can check them.

:class:`ad_core.preprocessing.Preprocess` cuts frames into the grid; see its ``tiles``.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_TILES = 64
MAX_TILE_OVERLAP = 0.75  # the share of a tile's side shared with its neighbour
MAX_PLACED_TILES = 256  # tiles a frame with the overlapping ones


def parse_tiles(value: str | Sequence[int]) -> tuple[int, int]:
    """``"2x3"`` (or ``[2, 3]``) -> ``(rows, cols)``; raises ``ValueError`` saying what is expected."""
    try:
        parts = value.lower().replace("*", "x").split("x") if isinstance(value, str) else list(value)
        rows, cols = (int(str(v).strip()) for v in parts)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not ROWSxCOLS, e.g. 1x1 (no tiling) or 2x2") from None
    if rows < 1 or cols < 1 or rows * cols > MAX_TILES:
        raise ValueError(f"{value!r}: rows and columns must be at least 1, and at most {MAX_TILES} tiles in all")
    return rows, cols


def tiles_text(tiles: str | Sequence[int]) -> str:
    """The canonical ``"RxC"`` form of a tile grid (the hyperparameter's value in meta.json)."""
    rows, cols = parse_tiles(tiles)
    return f"{rows}x{cols}"
