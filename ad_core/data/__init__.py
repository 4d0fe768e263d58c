"""Data: image reading, dataset layouts, the sample dataset and VisA."""

from ad_core.data.images import read_image, read_mask
from ad_core.data.layout import CategoryData, Sample, resolve_category

__all__ = ["CategoryData", "Sample", "read_image", "read_mask", "resolve_category"]
