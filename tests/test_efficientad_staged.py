"""EfficientAD uses a staged teacher and penalty folder when given, and records where they came from."""

from __future__ import annotations

import shutil

import pytest
import torch

from ad_core import load_bundle, train
from ad_core.errors import WeightsNotFoundError


def test_staged_teacher_and_penalty_folder_are_used(trained, sample_root, tmp_path):
    weights = torch.load(trained("efficientad") / "pytorch" / "model.pth", weights_only=True)
    teacher = {k.removeprefix("teacher."): v for k, v in weights.items() if k.startswith("teacher.")}
    staged = tmp_path / "pretrained_teacher_small.pth"
    torch.save(teacher, staged)
    penalty = tmp_path / "penalty" / "n01440764"
    penalty.mkdir(parents=True)
    for p in sorted((sample_root / "train" / "Sample_grass").glob("*.png"))[:4]:
        shutil.copy(p, penalty / p.name)
    data = tmp_path / "data"
    (data / "train" / "Mini").mkdir(parents=True)
    for p in sorted((sample_root / "train" / "Sample_brick").glob("*.png"))[:6]:
        shutil.copy(p, data / "train" / "Mini" / p.name)

    run = train(
        "efficientad",
        "Mini",
        data,
        tmp_path / "models",
        image_size=256,
        epochs=1,
        teacher_weights=str(staged),
        penalty_dir=str(tmp_path / "penalty"),
        progress=False,
    )
    meta = load_bundle(run).meta
    assert meta["teacher_source"] == f"file:{staged.resolve()}"
    assert meta["penalty_source"] == f"folder:{(tmp_path / 'penalty').resolve()}"
    saved = torch.load(run / "pytorch" / "model.pth", weights_only=True)
    assert all(torch.equal(saved[f"teacher.{k}"], v) for k, v in teacher.items())  # the teacher stays frozen


def test_missing_staged_teacher_is_named(sample_root, tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"nope\.pth does not exist"):
        train("efficientad", "Sample_brick", sample_root, tmp_path, teacher_weights=str(tmp_path / "nope.pth"))
