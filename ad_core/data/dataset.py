"""Torch datasets and loaders over image files, with the seed's ``--num_workers`` rules."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ad_core.data.images import read_image, read_mask, resize_mask
from ad_core.errors import ConfigError
from ad_core.preprocessing import Preprocess


class ImageDataset(Dataset):
    """Images (and optional masks) from a list of files, preprocessed for a model.

    With ``preprocess.tiles`` other than 1x1, every tile is an item (image ``i // T``, tile ``i % T``,
    row-major), so fitting sees tiles as images and scoring gets them in order for ``merge_tiles``.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        preprocess: Preprocess,
        labels: Sequence[int] | None = None,
        masks: Sequence[Path | None] | None = None,
        augment: bool = False,
    ) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess
        self.labels = list(labels) if labels is not None else [0] * len(self.paths)
        self.masks = list(masks) if masks is not None else [None] * len(self.paths)
        self.augment = augment
        self._decoded: tuple[int, np.ndarray] | None = None  # the last image, for its other tiles

    def __len__(self) -> int:
        return len(self.paths) * self.preprocess.n_tiles

    def __getitem__(self, item: int) -> dict:
        i, k = divmod(item, self.preprocess.n_tiles)
        pre = self.preprocess
        image = torch.from_numpy(pre.array(pre.tile(self._read(i), k)))
        if self.augment and torch.rand(()) < 0.5:
            image = image.flip(-1)
        size = (pre.image_size, pre.image_size)
        mask_path = self.masks[i]
        if mask_path is None:
            mask = np.zeros(size, bool)
        elif pre.n_tiles == 1:
            mask = read_mask(mask_path, size)
        else:
            mask = resize_mask(pre.tile(read_mask(mask_path), k), size)
        return {"image": image, "label": self.labels[i], "mask": torch.from_numpy(mask), "index": i}

    def _read(self, i: int) -> np.ndarray:
        """Image ``i``, decoded once for all its tiles (tiles come in order unless shuffled)."""
        if self._decoded is None or self._decoded[0] != i:
            self._decoded = (i, read_image(self.paths[i]))
        return self._decoded[1]


def check_num_workers(num_workers: int) -> int:
    """Validate ``--num_workers``: a non-negative count, and parallel loading only on Linux.

    Seed 003: PyTorch's worker processes fail to allocate memory on Windows, so more than zero
    workers is refused there with a message instead of a crash.
    """
    if num_workers < 0:
        raise ConfigError(f"--num_workers must be 0 or more, got {num_workers}")
    if num_workers > 0 and platform.system().lower() != "linux":
        raise ConfigError(
            f"--num_workers {num_workers}: parallel image loading is only supported on Linux "
            f"(this is {platform.system()}); use --num_workers 0"
        )
    return num_workers


def make_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, shuffle: bool = False) -> DataLoader:
    """A DataLoader with validated worker count and a fixed shuffle generator."""
    check_num_workers(num_workers)
    gen = torch.Generator().manual_seed(0)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=gen if shuffle else None,
        persistent_workers=False,
    )
