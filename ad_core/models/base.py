"""The interface every model shares: fit on normal images, score images, save and load its state.

A model object wraps a pure ``nn.Module`` (anomalib's torch models, or our VAE). The wrapper owns
hyperparameters, preprocessing, training and the split of its state into ``model.pth`` plus an
optional array file (``memory_bank.npz`` / ``stats.npz``); what files and keys those are comes from
the model's spec (``ad_core/models/<name>/spec.py``).

Scoring always goes through :class:`ad_core.runtime.Scorer`: the model's export graph (run by torch
here) followed by its head, the same two steps every deployed runtime runs. So the scores that set
a threshold in calibration, ``ad-core test`` and tuning are computed the way the threshold is
applied later (``tests/test_runtime.py`` compares them with the exported ONNX graph).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ad_core.data.dataset import ImageDataset, make_loader
from ad_core.device import CPU, Device
from ad_core.device import resolve as resolve_device
from ad_core.errors import ADCoreError, BundleError, TrainingDiverged, TrainingStopped
from ad_core.models.registry import get_spec
from ad_core.models.spec import ModelSpec
from ad_core.options import TrainOptions
from ad_core.preprocessing import DEFAULT_RESIZE, IMAGENET_MEAN, IMAGENET_STD, Preprocess
from ad_core.tiles import parse_tiles

FitConfig = TrainOptions  # the name the models' signatures use


class AnomalyModel(ABC):
    """Base class of every registered model."""

    name: ClassVar[str]  # the registry name; everything else about the model is in its spec
    input_scale: ClassVar[tuple[tuple[float, ...], tuple[float, ...]]] = (IMAGENET_MEAN, IMAGENET_STD)
    """the input's ``(mean, std)`` after scaling to [0, 1]: ImageNet's, or :data:`UNIT_SCALE` for [0, 1] input"""

    @property
    def spec(self) -> ModelSpec:
        """The model's registry entry."""
        return get_spec(self.name)

    @property
    def dir_name(self) -> str:
        """Run-directory name (``PatchCore``, ``PaDiM`` ...)."""
        return self.spec.dir_name

    @property
    def artifact_file(self) -> str | None:
        """``memory_bank.npz`` / ``stats.npz``, or None."""
        return self.spec.artifact_file

    @property
    def artifact_key(self) -> str | None:
        """The meta.json key naming the array file."""
        return self.spec.artifact_key

    def __init__(self, **hparams: Any) -> None:
        self.hparams = dict(hparams)
        self.image_size = int(hparams["image_size"])
        self.module: nn.Module = self.build_module()
        self.fit_info: dict[str, Any] = {}
        self.device: Device = CPU

    # -- where it runs -------------------------------------------------------------------------
    def to(self, device: str | Device | None) -> AnomalyModel:
        """Move the model to ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a resolved Device)."""
        self.device = resolve_device(device)
        self.module.to(self.device.torch())
        return self

    def on_device(self, x: torch.Tensor) -> torch.Tensor:
        """A batch on the model's device (a no-op on the CPU)."""
        return x if not self.device.is_cuda else x.to(self.device.torch(), non_blocking=True)

    # -- construction --------------------------------------------------------------------------
    @abstractmethod
    def build_module(self) -> nn.Module:
        """Create the torch module (no ImageNet weights yet)."""

    def prepare_pretrained(self, cfg: FitConfig) -> None:  # noqa: B027 - optional hook
        """Load pretrained weights before fitting (backbones); default: nothing."""

    @property
    def preprocess(self) -> Preprocess:
        """Preprocessing that feeds this model: ``input_scale`` and the ``resize`` hyperparameter."""
        return Preprocess(
            self.image_size,
            *self.input_scale,
            resize=self.hparams.get("resize", DEFAULT_RESIZE),
            tiles=parse_tiles(self.hparams.get("tiles", "1x1")),
            tile_overlap=float(self.hparams.get("tile_overlap", 0.0)),
        )

    # -- fitting and scoring -------------------------------------------------------------------
    @abstractmethod
    def fit(self, train: Sequence[Path], val: Sequence[Path], cfg: FitConfig) -> dict[str, Any]:
        """Fit on normal images; return a history dict (written to logs/)."""

    def update(
        self, train: Sequence[Path], val: Sequence[Path], cfg: FitConfig, previous: dict[str, np.ndarray] | None
    ) -> dict[str, Any]:
        """Retrain the loaded model on new normal images (seed ``retrain.py``).

        Trained models fine-tune from their current weights. Models with an array file rebuild it
        from the new images, or, given the ``previous`` arrays (``--load_bank`` / ``--load_stats``),
        extend / merge it.
        """
        if previous is not None:
            raise ADCoreError(f"{self.name} has no memory bank or statistics to merge")
        return self.fit(train, val, cfg)

    def absorb(self, paths: Sequence[Path], cfg: FitConfig) -> dict[str, Any] | None:
        """Add more normal images to the fitted model without refitting it; ``None``: this model cannot.

        Training calls it with the held-out images once they have calibrated the threshold, so the
        deployed bank or statistics see every normal image. PatchCore extends its bank and PaDiM merges
        its statistics (as ``--load_bank`` / ``--load_stats`` do); trained models keep their weights.
        """
        return None

    def previous_arrays(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, np.ndarray]:
        """The arrays to merge new images into (``--load_bank`` / ``--load_stats``), completed from meta.json."""
        return arrays

    def scoring_graph(self) -> nn.Module:
        """The module that is exported to ONNX and run by the torch backend, in eval mode, on the model's device.

        The graph's own buffers (PaDiM's blur kernel) follow the module onto the GPU.
        """
        self.module.eval()
        return self.spec.graph_class(self.module).eval().to(self.device.torch())

    def scorer(self, bank_search: str = "auto"):
        """A :class:`ad_core.runtime.Scorer` on the current weights (torch graph + head), for raw scores."""
        from ad_core.runtime import Scorer

        return Scorer.for_model(self, bank_search=bank_search)

    def interim_scores(self, paths: Sequence[Path], calib: Sequence[Path], cfg: FitConfig) -> np.ndarray:
        """Raw scores in the middle of training (tuning reports them to prune hopeless trials)."""
        return self.score_paths(paths, cfg.batch_size, cfg.num_workers)[0]

    def score_paths(
        self,
        paths: Sequence[Path],
        batch_size: int = 8,
        num_workers: int = 0,
        progress: bool = False,
        desc: str = "scoring",
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores ``(N,)`` and raw anomaly maps ``(N, S, S)`` for image files, on the deployed scoring path.

        With tiles, the loader yields every tile and the maps are ``(N, rows * S, cols * S)``
        (:meth:`ad_core.preprocessing.Preprocess.merge_tiles`, as the deployed Scorer does).
        ``on_progress(desc, images done, images)`` after each batch (the panels' bars).
        """
        pre = self.preprocess
        loader = make_loader(ImageDataset(paths, pre), batch_size, num_workers)
        scorer = self.scorer()
        scores, maps = [], []
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            if on_progress is not None:
                on_progress(desc, sum(len(s) for s in scores) // pre.n_tiles, len(paths))
            raw, raw_map = scorer.raw(batch["image"])
            scores.append(raw)
            maps.append(raw_map)
        if on_progress is not None:
            on_progress(desc, len(paths), len(paths))
        return pre.merge_tiles(np.concatenate(scores), np.concatenate(maps))

    # -- persistence ---------------------------------------------------------------------------
    def weights_state(self) -> dict[str, torch.Tensor]:
        """State for ``model.pth``: the module's state minus what the array file holds."""
        skip = set(self.artifact_buffers())
        return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items() if k not in skip}

    def artifact_buffers(self) -> dict[str, torch.Tensor]:
        """Module buffers that live in the array file instead of model.pth (name -> tensor)."""
        return {}

    def artifacts(self) -> dict[str, np.ndarray] | None:
        """Arrays for ``memory_bank.npz`` / ``stats.npz``; None for models without one."""
        return None

    def load_state(self, weights: dict[str, torch.Tensor], arrays: dict[str, np.ndarray] | None) -> None:
        """Restore from ``model.pth`` (+ arrays); shape mismatches raise :class:`BundleError`."""
        self.set_artifacts(arrays)
        load_strict(self.module, {**weights, **self.artifact_buffers()}, "model.pth")
        self.module.to(self.device.torch()).eval()

    def set_artifacts(self, arrays: dict[str, np.ndarray] | None) -> None:  # noqa: B027 - optional hook
        """Install the array file's contents (memory bank, Gaussian statistics)."""

    def meta(self) -> dict[str, Any]:
        """The seed 001 hyperparameter keys for meta.json."""
        return {k: self.hparams[k] for k in self.spec.seed_keys}


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], filename: str) -> None:
    """``load_state_dict(strict=True)`` with an error that says which tensor does not fit."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"{k} has shape {tuple(state[k].shape)}, expected {tuple(own[k].shape)}")
        if missing:
            parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        raise BundleError(f"{filename} does not match the model described by meta.json: {'; '.join(parts)}")
    module.load_state_dict(state, strict=True)


def train_loop(
    model: AnomalyModel,
    params: Sequence[nn.Parameter],
    step: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    val_loss: Callable[[torch.Tensor], float],
    train: Sequence[Path],
    val: Sequence[Path],
    cfg: FitConfig,
    lr: float,
    default_epochs: int,
    weight_decay: float = 1e-5,
    max_grad_norm: float | None = None,
) -> dict[str, Any]:
    """Shared loop for trained models: Adam, validation loss, early stopping, best weights, progress.

    ``step(batch)`` returns a dict of losses whose ``"loss"`` is minimised; ``val_loss(batch)``
    returns a float. The weights of the epoch with the lowest validation loss are kept.
    ``max_grad_norm`` clips the gradient norm; a non-finite loss stops training with an error
    instead of saving a diverged model.
    """
    epochs = cfg.epochs or default_epochs
    device = model.device
    scaler = device.grad_scaler()  # fp16 needs loss scaling; bf16 and fp32 do not
    loader = make_loader(ImageDataset(train, model.preprocess, augment=True), cfg.batch_size, cfg.num_workers, True)
    val_loader = make_loader(ImageDataset(val or train, model.preprocess), cfg.batch_size, cfg.num_workers)
    optim = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    best, best_state, bad_epochs = math.inf, None, 0
    history: list[dict[str, float]] = []
    bar = tqdm(range(epochs), desc=f"{model.name} training", disable=not cfg.progress)
    for epoch in bar:
        model.module.train()
        sums: dict[str, float] = {}
        for i, batch in enumerate(loader, 1):
            if cfg.stop.is_set():
                raise TrainingStopped("training stopped on request")
            cfg.progress_of(f"epoch {epoch + 1}/{epochs}", i, len(loader))
            with device.autocast():
                losses = step(model.on_device(batch["image"]))
            optim.zero_grad(set_to_none=True)
            if not torch.isfinite(losses["loss"]):
                raise TrainingDiverged(
                    f"{model.name}: the training loss became {float(losses['loss'])} in epoch {epoch + 1}; "
                    f"lower --learning_rate (now {lr})"
                )
            _optimise(losses["loss"], optim, scaler, params, max_grad_norm)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(batch["image"])
        model.module.eval()
        with torch.no_grad(), device.autocast():
            vl = sum(val_loss(model.on_device(b["image"])) * len(b["image"]) for b in val_loader) / len(
                val_loader.dataset
            )
        row = {"epoch": epoch + 1, **{k: v / len(loader.dataset) for k, v in sums.items()}, "val_loss": vl}
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4g}", val=f"{vl:.4g}")
        if cfg.on_epoch is not None:
            cfg.on_epoch(row)
        if vl < best - 1e-9:
            best, bad_epochs = vl, 0
            best_state = {k: v.detach().clone() for k, v in model.module.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                break
    if best_state is not None:
        model.module.load_state_dict(best_state)
    model.module.eval()
    best_epoch = min(history, key=lambda r: r["val_loss"])["epoch"]
    return {"history": history, "best_epoch": best_epoch, "best_val_loss": best, "epochs_run": len(history)}


def _optimise(loss: torch.Tensor, optim, scaler, params, max_grad_norm: float | None) -> None:
    """Backward and step, through the fp16 loss scaler when there is one; the gradient clipped when asked."""
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optim)
    else:
        loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if scaler is not None:
        scaler.step(optim)
        scaler.update()
    else:
        optim.step()


def out_of_memory(exc: BaseException, device: Device, batch_size: int, what: str) -> ADCoreError:
    """A CUDA out-of-memory error as a message that says which flag to change."""
    smaller = max(1, batch_size // 2)
    return ADCoreError(
        f"{what}: CUDA out of memory on {device.name} ({device.description}) at batch size {batch_size}; "
        f"use --batch {smaller} (or --image_size smaller), or --device cpu ({str(exc).splitlines()[0]})"
    )
