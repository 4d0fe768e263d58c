"""The one place where an RGB image becomes a model input tensor.

The same :class:`Preprocess` is recorded in meta.json (``preprocessing``) so that every runtime
feeds the graph identical tensors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """Resize to a square ``image_size`` (PIL bilinear), scale to [0, 1], then ``(x - mean) / std``."""

    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "bilinear"

    def resize_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """Resize an ``(H, W, 3)`` uint8 image to ``(image_size, image_size, 3)``."""
        if rgb.shape[0] == self.image_size and rgb.shape[1] == self.image_size:
            return rgb
        img = Image.fromarray(rgb).resize((self.image_size, self.image_size), Image.BILINEAR)
        return np.asarray(img)

    def array(self, rgb: np.ndarray) -> np.ndarray:
        """Turn an ``(H, W, 3)`` uint8 RGB image into a ``(3, S, S)`` float32 array."""
        arr = self.resize_rgb(rgb).astype(np.float32) / 255.0
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        """:meth:`array` as a torch tensor."""
        import torch

        return torch.from_numpy(self.array(rgb))

    def to_dict(self) -> dict:
        """JSON-ready form for meta.json."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["color"] = "RGB"
        d["scale"] = "1/255"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["image_size"]), tuple(d["mean"]), tuple(d["std"]), d.get("resize", "bilinear"))


UNIT_SCALE = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # mean/std for models that take [0, 1] input
