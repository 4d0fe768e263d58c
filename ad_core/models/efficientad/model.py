"""EfficientAD: anomalib's ``EfficientAdModel`` with an offline path for its two downloads.

EfficientAD needs a pretrained teacher (``pretrained_teacher_<size>.pth``) and an ImageNet-like
"penalty" image set. Resolution order, offline first:

* teacher: ``teacher_weights`` file; anomalib's cache
  (``~/.cache/anomalib/pre_trained/efficientad_pretrained_weights/``); our cache
  (``$AD_CORE_WEIGHTS_DIR``); a download when allowed; otherwise the **offline fallback**: the
  teacher is distilled from the bundled ImageNet EfficientNet-Lite0 (its ``blocks.2`` and
  ``blocks.4`` features, upsampled to the teacher grid, through a 1x1 head that is then dropped)
  on the training images and the penalty images.
* penalty set: ``penalty_dir`` (e.g. imagenette2); ``./datasets/imagenette`` (anomalib's
  default); otherwise the **offline fallback**: the natural photos scikit-image ships
  (astronaut, coffee, chelsea, ...), random crops.

meta.json records which were used (``teacher_source``, ``penalty_source``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from anomalib.models.image.efficient_ad.torch_model import EfficientAdModel
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from ad_core.backbones import cache_dir, downloads_allowed, load_backbone_weights, resolve_weights
from ad_core.data.dataset import ImageDataset, make_loader
from ad_core.data.images import read_image
from ad_core.errors import ConfigError, WeightsNotFoundError
from ad_core.models.base import AnomalyModel, FitConfig, TrainingStopped, train_loop
from ad_core.preprocessing import UNIT_SCALE

SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "cat",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "logo",
    "motorcycle_left",
    "motorcycle_right",
)


def _teacher_file(size: str, explicit: str | None, allow_download: bool | None) -> tuple[Path | None, str]:
    name = f"pretrained_teacher_{size}.pth"
    if explicit:
        if not Path(explicit).is_file():
            raise WeightsNotFoundError(f"teacher_weights {explicit} does not exist (expected {name})")
        return Path(explicit), f"file:{Path(explicit).resolve()}"
    from anomalib.utils.path import get_pretrained_weights_dir

    anomalib_dir = get_pretrained_weights_dir() / "efficientad_pretrained_weights"
    for candidate in (anomalib_dir / name, cache_dir() / name):
        if candidate.is_file():
            return candidate, f"cache:{candidate}"
    if downloads_allowed(allow_download):
        from anomalib.data.utils import download_and_extract
        from anomalib.models.image.efficient_ad.lightning_model import WEIGHTS_DOWNLOAD_INFO

        download_and_extract(anomalib_dir.parent, WEIGHTS_DOWNLOAD_INFO)
        return anomalib_dir / name, "download:anomalib efficientad_pretrained_weights"
    return None, "distilled:tf_efficientnet_lite0"


def _penalty_images(penalty_dir: str | None, limit: int = 2000) -> tuple[list[np.ndarray] | list[Path], str]:
    for folder in (penalty_dir, "datasets/imagenette"):
        if folder and Path(folder).is_dir():
            files = sorted(
                p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in {".jpg", ".jpeg", ".png"}
            )
            if files:
                chosen = files if len(files) <= limit else random.Random(0).sample(files, limit)
                return chosen, f"folder:{Path(folder).resolve()}"
    import skimage.data

    photos = []
    for name in SKIMAGE_PHOTOS:
        try:
            arr = np.asarray(getattr(skimage.data, name)())
        except Exception:
            continue
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        photos.append(np.ascontiguousarray(arr[..., :3].astype(np.uint8)))
    return photos, "skimage.data photos"


class _PenaltySampler:
    """Random penalty images as in anomalib: resize to 2x, random grayscale (p=0.3), centre crop."""

    def __init__(self, items: list, size: int, seed: int) -> None:
        self.items, self.size, self.rng = items, size, random.Random(seed)

    def __call__(self, n: int = 1) -> torch.Tensor:
        out = []
        for _ in range(n):
            item = self.rng.choice(self.items)
            rgb = read_image(item) if isinstance(item, Path) else item
            big = np.asarray(Image.fromarray(rgb).resize((2 * self.size, 2 * self.size), Image.BILINEAR))
            if isinstance(item, np.ndarray):  # few photos: random crop for variety
                y, x = self.rng.randrange(self.size + 1), self.rng.randrange(self.size + 1)
            else:
                y = x = self.size // 2
            crop = big[y : y + self.size, x : x + self.size].astype(np.float32) / 255.0
            if self.rng.random() < 0.3:
                crop = np.repeat(crop.mean(axis=2, keepdims=True), 3, axis=2)
            out.append(torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))))
        return torch.stack(out)


class EfficientAd(AnomalyModel):
    """Student-teacher + auto-encoder (Batzner et al. 2024)."""

    name = "efficientad"
    input_scale = UNIT_SCALE  # its networks apply ImageNet normalisation inside: input is [0, 1] RGB

    def build_module(self) -> EfficientAdModel:
        """AnomaLib's torch model (teacher 384 channels, no padding, padded maps)."""
        if self.image_size < 256 or self.image_size % 64:
            raise ConfigError(f"image_size {self.image_size}: EfficientAD needs a multiple of 64, at least 256")
        return EfficientAdModel(teacher_out_channels=384, model_size=self.hparams["model_size"]).eval()

    # -- teacher ------------------------------------------------------------------------------
    def _distill_teacher(self, train: Sequence[Path], penalty: _PenaltySampler, cfg: FitConfig) -> None:
        """Distil the teacher from EfficientNet-Lite0 ImageNet features (offline fallback)."""
        import timm

        extractor = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True, out_indices=(2, 3))
        load_backbone_weights(extractor, resolve_weights("tf_efficientnet_lite0"), "tf_efficientnet_lite0")
        extractor.to(self.device.torch()).eval()
        teacher = self.module.teacher
        head = nn.Conv2d(384, sum(extractor.feature_info.channels()), 1).to(self.device.torch())
        optim = torch.optim.Adam([*teacher.parameters(), *head.parameters()], lr=1e-3, weight_decay=1e-5)
        mean = torch.tensor([0.485, 0.456, 0.406], device=self.device.torch()).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], device=self.device.torch()).view(1, 3, 1, 1)
        loader = make_loader(ImageDataset(train, self.preprocess, augment=True), 4, cfg.num_workers, True)
        steps = int(self.hparams["distill_steps"])
        teacher.train()
        bar = tqdm(total=steps, desc="efficientad teacher distillation", disable=not cfg.progress, leave=False)
        done = 0
        while done < steps:
            for batch in loader:
                if cfg.stop.is_set():
                    raise TrainingStopped("training stopped on request")
                x = self.on_device(torch.cat([batch["image"], penalty(2)]))
                with torch.no_grad():
                    feats = extractor((x - mean) / std)
                out = teacher(x)
                target = torch.cat([F.interpolate(f, size=out.shape[-2:], mode="bilinear") for f in feats], 1)
                target = (target - target.mean((0, 2, 3), keepdim=True)) / (target.std((0, 2, 3), keepdim=True) + 1e-6)
                loss = F.mse_loss(head(out), target)
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                done += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
                cfg.progress_of("teacher distillation", done, steps)
                if done >= steps:
                    break
        bar.close()
        teacher.eval()

    @torch.no_grad()
    def _teacher_mean_std(self, train: Sequence[Path], cfg: FitConfig) -> None:
        loader = make_loader(ImageDataset(train, self.preprocess), cfg.batch_size, cfg.num_workers)
        n, s, sq = 0, 0.0, 0.0
        for i, batch in enumerate(loader, 1):
            cfg.progress_of("teacher statistics", i, len(loader))
            y = self.module.teacher(self.on_device(batch["image"]))
            n += y[:, 0].numel()
            s = s + y.sum(dim=(0, 2, 3))
            sq = sq + (y**2).sum(dim=(0, 2, 3))
        mean = s / n
        std = torch.sqrt(sq / n - mean**2).clamp_min(1e-6)
        self.module.mean_std.update({"mean": mean[None, :, None, None], "std": std[None, :, None, None]})

    @torch.no_grad()
    def _map_quantiles(self, paths: Sequence[Path], cfg: FitConfig) -> None:
        loader = make_loader(ImageDataset(paths, self.preprocess), cfg.batch_size, cfg.num_workers)
        maps_st, maps_ae = [], []
        for i, batch in enumerate(loader, 1):
            cfg.progress_of("map quantiles", i, len(loader))
            st, ae = self.module.get_maps(self.on_device(batch["image"]), normalize=False)
            maps_st.append(st.flatten())
            maps_ae.append(ae.flatten())
        q = {}
        for key, maps in (("st", maps_st), ("ae", maps_ae)):
            flat = torch.cat(maps)
            if flat.numel() > 16_000_000:
                flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:16_000_000]]
            q[f"qa_{key}"], q[f"qb_{key}"] = torch.quantile(flat, 0.9), torch.quantile(flat, 0.995)
        self.module.quantiles.update(q)

    def interim_scores(self, paths: Sequence[Path], calib: Sequence[Path], cfg: FitConfig) -> np.ndarray:
        """Mid-training scores: the map quantiles are refreshed on ``calib`` first, as at the end of fit."""
        self._map_quantiles(calib, cfg)
        return super().interim_scores(paths, calib, cfg)

    def fit(self, train: Sequence[Path], val: Sequence[Path], cfg: FitConfig) -> dict[str, Any]:
        """Teacher (staged or distilled), channel statistics, student + AE training, map quantiles."""
        torch.manual_seed(cfg.seed)
        items, penalty_source = _penalty_images(self.hparams["penalty_dir"])
        penalty = _PenaltySampler(items, self.image_size, cfg.seed)
        teacher_path, teacher_source = _teacher_file(
            self.hparams["model_size"], self.hparams["teacher_weights"], cfg.allow_download
        )
        if teacher_path is not None:
            self.module.teacher.load_state_dict(torch.load(teacher_path, map_location="cpu", weights_only=True))
        else:
            self._distill_teacher(train, penalty, cfg)
        self.fit_info.update(teacher_source=teacher_source, penalty_source=penalty_source)
        for p in self.module.teacher.parameters():
            p.requires_grad_(False)
        self._teacher_mean_std(train, cfg)
        return self._train_student(train, val, cfg, penalty)

    def update(
        self, train: Sequence[Path], val: Sequence[Path], cfg: FitConfig, previous: dict[str, np.ndarray] | None
    ) -> dict[str, Any]:
        """Fine-tune student and auto-encoder from the loaded weights; the teacher and its statistics stay."""
        if previous is not None:
            return super().update(train, val, cfg, previous)
        torch.manual_seed(cfg.seed)
        items, penalty_source = _penalty_images(self.hparams["penalty_dir"])
        self.fit_info.update(penalty_source=penalty_source)
        for p in self.module.teacher.parameters():
            p.requires_grad_(False)
        return self._train_student(train, val, cfg, _PenaltySampler(items, self.image_size, cfg.seed))

    def _train_student(
        self, train: Sequence[Path], val: Sequence[Path], cfg: FitConfig, penalty: _PenaltySampler
    ) -> dict[str, Any]:
        """Student + auto-encoder training (batch 1, as in the paper), then the map quantiles."""
        m = self.module

        def step(x: torch.Tensor) -> dict[str, torch.Tensor]:
            m.teacher.eval()
            loss_st, loss_ae, loss_stae = m(x, self.on_device(penalty(len(x))))
            return {"loss": loss_st + loss_ae + loss_stae, "st": loss_st, "ae": loss_ae, "stae": loss_stae}

        def val_loss(x: torch.Tensor) -> float:
            student, dist = m.compute_student_teacher_distance(x)
            teacher = m._normalize_teacher(m.teacher(x))
            ae = m.ae(x, x.shape[-2:])
            c = m.teacher_out_channels
            return float(dist.mean() + ((teacher - ae) ** 2).mean() + ((ae - student[:, c:]) ** 2).mean())

        batch = cfg.replace(batch_size=1)
        params = [*m.student.parameters(), *m.ae.parameters()]
        result = train_loop(self, params, step, val_loss, train, val, batch, self.hparams["learning_rate"], 20)
        self._map_quantiles(val or train, cfg)
        return result
