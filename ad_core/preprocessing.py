"""The one place where an RGB image becomes a model input tensor.

The same :class:`Preprocess` is recorded in meta.json (``preprocessing``) so that every runtime
feeds the graph identical tensors.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ad_core.errors import ConfigError
from ad_core.tiles import MAX_PLACED_TILES, MAX_TILE_OVERLAP, parse_tiles

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESIZE_METHODS = {
    "bilinear_float": "PIL bilinear on floats, channel by channel (faint defects keep their contrast)",
    "bilinear": "PIL bilinear on the 8-bit image, rounded back to 8 bits (runs made before December 2026)",
}
DEFAULT_RESIZE = "bilinear_float"
LEGACY_RESIZE = "bilinear"
"""what a meta.json without ``preprocessing.resize`` (or a ``resize`` hyperparameter) was made with"""


@dataclass(frozen=True)
class Preprocess:
    """Resize to a square ``image_size``, scale to [0, 1], then ``(x - mean) / std``.

    ``resize`` (one of :data:`RESIZE_METHODS`): ``bilinear_float`` resizes each channel as floats,
    as anomalib's torchvision pre-processor does; ``bilinear`` rounds the resized image to 8 bits,
    which erases part of a faint defect's contrast (PaDiM on ELPV poly: 0.4 points lower on each of
    three draws, docs/benchmarks.md) and is kept so that older runs score exactly as made.

    ``tiles`` ``(rows, cols)``: a frame is cut into that grid of equal tiles and each tile is resized
    to ``image_size`` on its own, so a large frame keeps its detail (anomalib's ``Tiler``): the model
    trains on tiles, the image score is the highest tile's, and the map is the tiles' maps put back
    in place, ``(rows * S, cols * S)`` without overlap. ``(1, 1)`` is the whole frame.

    ``tile_overlap`` o: tiles of the same size (a ``rows x cols`` grid's) placed at a stride of at
    most ``(1 - o)`` of a tile (anomalib's ``Tiler`` stride), evenly from edge to edge, so a defect on
    a grid line is also seen whole by a tile that straddles it, at the grid's resolution. Each side
    then holds ``ceil((n - 1) / (1 - o)) + 1`` tiles (a 2x2 grid with any overlap up to 0.5: 3x3),
    which is what a frame costs; the map keeps the grid's size, each pixel the mean of the tiles over it.
    """

    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = DEFAULT_RESIZE
    tiles: tuple[int, int] = (1, 1)
    tile_overlap: float = 0.0

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_METHODS:
            raise ConfigError(
                f"preprocessing.resize: {self.resize!r} is not a known resize; expected one of {', '.join(RESIZE_METHODS)}"
            )
        try:
            object.__setattr__(self, "tiles", parse_tiles(self.tiles))
        except ValueError as exc:
            raise ConfigError(f"preprocessing.tiles: {exc}") from None
        if not 0.0 <= float(self.tile_overlap) <= MAX_TILE_OVERLAP:
            raise ConfigError(
                f"preprocessing.tile_overlap: {self.tile_overlap!r}; expected a share of a tile from 0 (none) "
                f"to {MAX_TILE_OVERLAP}"
            )
        object.__setattr__(self, "tile_overlap", float(self.tile_overlap))
        if self.tile_overlap and self.tiles == (1, 1):
            raise ConfigError(
                f"preprocessing.tile_overlap: {self.tile_overlap} with tiles 1x1 (the whole frame) has no tiles to "
                "overlap; give tiles as well (e.g. 2x2) or leave tile_overlap at 0"
            )
        if self.n_tiles > MAX_PLACED_TILES:
            raise ConfigError(
                f"preprocessing.tile_overlap: {self.tile_overlap} on a {self.tiles[0]}x{self.tiles[1]} grid places "
                f"{self.n_tiles} tiles a frame; at most {MAX_PLACED_TILES}: use a smaller overlap or fewer tiles"
            )

    @property
    def placed(self) -> tuple[int, int]:
        """Tiles along each side, ``(rows, cols)`` of the grid with the overlapping ones between."""
        return _count(self.tiles[0], self.tile_overlap), _count(self.tiles[1], self.tile_overlap)

    @property
    def n_tiles(self) -> int:
        """Tiles per frame (1 without tiling)."""
        return self.placed[0] * self.placed[1]

    def tile(self, rgb: np.ndarray, k: int) -> np.ndarray:
        """Tile ``k`` (row-major) of an ``(H, W, 3)`` frame: the grid's edges are rounded to whole pixels."""
        rows, cols = self.tiles
        if rows * cols == 1:
            return rgb
        h, w = rgb.shape[:2]
        if h < rows or w < cols:
            raise ConfigError(f"preprocessing.tiles: a {w}x{h} image cannot be cut into {rows}x{cols} tiles")
        r, c = divmod(k, self.placed[1])
        (y0, y1), (x0, x1) = _span(h, rows, r, self.tile_overlap), _span(w, cols, c, self.tile_overlap)
        return rgb[y0:y1, x0:x1]

    def tile_arrays(self, rgb: np.ndarray) -> np.ndarray:
        """Every tile of a frame as :meth:`array` makes it: ``(n_tiles, 3, S, S)`` float32."""
        return np.stack([self.array(self.tile(rgb, k)) for k in range(self.n_tiles)])

    def merge_tiles(self, scores: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-tile raw scores ``(N * T,)`` and maps ``(N * T, S, S)`` -> per-frame ``(N,)`` and ``(N, rows*S, cols*S)``.

        A frame's score is its highest tile's (a defect in any tile is a defect of the frame); its map
        is the tiles' maps in their places, averaged where tiles overlap.
        """
        rows, cols = self.tiles
        if rows * cols == 1:
            return scores, maps
        (pr, pc), s = self.placed, maps.shape[-1]
        n = len(scores) // (pr * pc)
        frame_scores = np.asarray(scores).reshape(n, pr * pc).max(axis=1)
        tiles = np.asarray(maps).reshape(n, pr, pc, s, s)
        if (pr, pc) == (rows, cols):
            return frame_scores, tiles.transpose(0, 1, 3, 2, 4).reshape(n, rows * s, cols * s)
        ys = [_span(rows * s, rows, r, self.tile_overlap)[0] for r in range(pr)]
        xs = [_span(cols * s, cols, c, self.tile_overlap)[0] for c in range(pc)]
        total = np.zeros((n, rows * s, cols * s), np.float32)
        count = np.zeros(total.shape[1:], np.float32)
        for r, y in enumerate(ys):
            for c, x in enumerate(xs):
                total[:, y : y + s, x : x + s] += tiles[:, r, c]
                count[y : y + s, x : x + s] += 1.0
        return frame_scores, total / count

    def planes(self, rgb: np.ndarray) -> np.ndarray:
        """An ``(H, W, 3)`` uint8 image resized to ``(3, image_size, image_size)`` float32 planes in [0, 255]."""
        size = (self.image_size, self.image_size)
        if rgb.shape[0] == self.image_size and rgb.shape[1] == self.image_size:
            return np.ascontiguousarray(rgb.transpose(2, 0, 1), np.float32)
        if self.resize == "bilinear":
            return np.ascontiguousarray(
                np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR)).transpose(2, 0, 1), np.float32
            )
        # mode "F" resizes 32-bit floats, antialiased as torchvision does (equal to 1e-5 on the [0, 1] scale)
        out = np.empty((3, *size), np.float32)
        for c, channel in enumerate(Image.fromarray(rgb).split()):
            out[c] = np.asarray(channel.convert("F").resize(size, Image.BILINEAR))
        return out

    def array(self, rgb: np.ndarray) -> np.ndarray:
        """Turn an ``(H, W, 3)`` uint8 RGB image into a ``(3, S, S)`` float32 array: ``(x / 255 - mean) / std``."""
        x = self.planes(rgb)
        x /= np.float32(255.0)
        x -= np.asarray(self.mean, np.float32)[:, None, None]
        x /= np.asarray(self.std, np.float32)[:, None, None]
        return x

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        """:meth:`array` as a torch tensor."""
        import torch

        return torch.from_numpy(self.array(rgb))

    def to_dict(self) -> dict:
        """JSON-ready form for meta.json."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["tiles"] = list(self.tiles)
        d["color"] = "RGB"
        d["scale"] = "1/255"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        """Inverse of :meth:`to_dict`."""
        return cls(
            int(d["image_size"]),
            tuple(d["mean"]),
            tuple(d["std"]),
            d.get("resize", LEGACY_RESIZE),
            tuple(d.get("tiles", (1, 1))),
            float(d.get("tile_overlap", 0.0)),
        )


def _count(n: int, overlap: float) -> int:
    """Tiles along a side cut into ``n`` whose neighbours share at least ``overlap`` of a tile."""
    return n if n == 1 or overlap == 0.0 else math.ceil((n - 1) / (1.0 - overlap) - 1e-9) + 1


def _span(length: int, n: int, i: int, overlap: float) -> tuple[int, int]:
    """Tile ``i`` along a side of ``length`` pixels cut into ``n``: ``(start, end)``, tiles evenly spread, edge to edge."""
    if overlap == 0.0 or n == 1:
        edges = np.linspace(0, length, n + 1).round().astype(int)
        return int(edges[i]), int(edges[i + 1])
    side = round(length / n)
    start = round(i * (length - side) / (_count(n, overlap) - 1))
    return start, start + side


UNIT_SCALE = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # mean/std for models that take [0, 1] input
