"""Shared fixtures: the sample dataset and one trained run per registered model (trained once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("AD_CORE_WEIGHTS_DIR", str(Path(__file__).parent / ".no-weights-cache"))

from ad_core.data.sample import build_sample_dataset

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MVTEC_ROOT = SHARED_DATA / "mvtec_ad"
CATEGORY = "Sample_brick"
# Short CPU schedules: tests check behaviour, the benchmarks in docs/ report full-length figures.
TEST_SETTINGS = {
    "patchcore": {"image_size": 128},
    "padim": {"image_size": 128},
    "vae": {"image_size": 128, "epochs": 40},
    "efficientad": {"image_size": 256, "epochs": 1, "distill_steps": 2},
}
# EfficientAD trains at batch 1 and 256 px (~2.5 s a step on a 2-core CPU): 8 of the 32 normal images
TRAIN_IMAGES = {"efficientad": 8}


def module_forward(bundle, batch):
    """The reference for our graph and head: the model module's own forward (anomalib's, or the VAE's).

    PatchCore's bank holds whitened rows (``whiten``); anomalib's forward gets the same matrix applied
    to its embedding, so its own search, re-weighting and map stay the reference.
    """
    import torch

    module = bundle.model.module.eval()
    w = getattr(bundle.model, "whitening", None)
    with torch.no_grad():
        if w is None:
            return module(batch)
        plain = module.generate_embedding
        module.generate_embedding = lambda features: torch.einsum("bchw,cd->bdhw", plain(features), w)
        try:
            return module(batch)
        finally:
            del module.generate_embedding


@pytest.fixture(scope="session", autouse=True)
def _models_cache(tmp_path_factory) -> None:
    """Bundles fetched by ``models:/`` go to a cache of this session, not the user's ~/.cache."""
    os.environ.setdefault("AD_CORE_MODELS_CACHE", str(tmp_path_factory.mktemp("models_cache")))


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    build_sample_dataset(root)
    return root


@pytest.fixture(scope="session")
def models_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


class _Runs:
    """Trains each model the first time a test asks for it."""

    def __init__(self, data_root: Path, models_root: Path) -> None:
        self.data_root, self.models_root, self.cache = data_root, models_root, {}

    def __call__(self, model: str) -> Path:
        if model not in self.cache:
            from ad_core import train

            self.cache[model] = train(
                model, CATEGORY, self._data(model), self.models_root, progress=False, **TEST_SETTINGS[model]
            )
        return self.cache[model]

    def _data(self, model: str) -> Path:
        if model not in TRAIN_IMAGES:
            return self.data_root
        import shutil

        root = self.models_root.parent / f"data_{model}"  # the same test split, fewer normal images
        if not root.is_dir():
            shutil.copytree(self.data_root, root)
            keep_train_images(root, CATEGORY, TRAIN_IMAGES[model])
        return root


def keep_train_images(data_root: Path, category: str, n: int) -> None:
    """Delete all but the first ``n`` (sorted) training images of a copied data root's category."""
    for extra in sorted((data_root / "train" / category).iterdir())[n:]:
        extra.unlink()


@pytest.fixture(scope="session")
def trained(sample_root, models_root) -> _Runs:
    return _Runs(sample_root, models_root)


@pytest.fixture(scope="session")
def evaluated(trained):
    """(run, report) per model, evaluated once."""
    from ad_core import evaluate

    cache: dict[str, tuple[Path, dict]] = {}

    def get(model: str):
        if model not in cache:
            run = trained(model)
            cache[model] = (run, evaluate(run, progress=False))
        return cache[model]

    return get


@pytest.fixture(scope="session")
def mosaics(sample_root, tmp_path_factory):
    """tests/test_tiles.py's set: the brick's crops as 2x2 mosaics in the seed layout: 8 training, 12 normal and 16 defective test frames."""
    from ad_core.data.sample import build_mosaics

    return build_mosaics(sample_root, tmp_path_factory.mktemp("mosaics") / "set")
