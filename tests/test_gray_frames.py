"""Grayscale frames, each of its own size and aspect (as inspection crops and magnetic-tile photos are).

Training, ``evaluate`` and the deployed ONNX path all stretch each frame to the model's size; the
model must still separate the defects, the masks must line up, and pictures come back in each
frame's own pixels.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ad_core import evaluate, train
from ad_core.convert import convtrt
from ad_core.data.images import read_image
from ad_core.inspector import Inspector

CAT = "Sample_brick"


@pytest.fixture(scope="module")
def gray_root(sample_root: Path, tmp_path_factory) -> tuple[Path, dict[str, tuple[int, int]]]:
    """The bundled brick as 8-bit grayscale, every image (and its mask) resized to its own width and height."""
    out = tmp_path_factory.mktemp("gray")
    rng = np.random.default_rng(0)
    sizes = {}
    for split in ("train", "test"):
        src = sample_root / split / CAT
        for p in sorted(src.rglob("*.png")):
            rel = p.relative_to(src)
            if rel.parts[0] == "masks":
                continue
            w, h = (int(v) for v in rng.integers(96, 240, size=2))
            target = out / split / "Gray" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.open(p).convert("L").resize((w, h), Image.BILINEAR).save(target)
            sizes[f"{split}/{rel.as_posix()}"] = (w, h)
            mask = src / "masks" / rel.name
            if split == "test" and mask.exists():
                (out / split / "Gray" / "masks").mkdir(exist_ok=True)
                Image.open(mask).resize((w, h), Image.NEAREST).save(out / split / "Gray" / "masks" / rel.name)
    assert len(set(sizes.values())) > 0.9 * len(sizes)  # nearly every frame has a size of its own
    return out, sizes


def test_padim_on_gray_frames_of_every_size(gray_root, tmp_path):
    root, sizes = gray_root
    run = train("padim", "Gray", root, tmp_path / "models", image_size=128, progress=False)
    report = evaluate(run, root, progress=False)
    # measured 0.885 image / 0.908 pixel AUROC; a model blind to the defects scores about 0.5
    assert report["image_auroc"] >= 0.75 and report["pixel_auroc"] >= 0.8

    pictures = run / "test_result" / "images" / "anomaly"
    for name in ("000_scratch", "002_hole"):
        size = sizes[f"test/anomaly/{name}.png"]
        assert Image.open(pictures / f"{name}_overlay.png").size == size
        assert Image.open(pictures / f"{name}_mask.png").size == size

    # the deployed path: the engine folder `convtrt` writes (as README deploys it), read by the Inspector as the node does
    with open(run / "test_result" / "predictions.csv") as fh:
        rows = {Path(r["file"]).name: float(r["raw_score"]) for r in csv.DictReader(fh)}
    engine = convtrt("padim", None, run, tmp_path / "engine")
    inspector = Inspector.open(engine.onnx)
    frame = read_image(root / "test" / "Gray" / "anomaly" / "002_hole.png")
    assert frame.shape == (*sizes["test/anomaly/002_hole.png"][::-1], 3)
    assert (frame == frame[:, :, :1]).all()  # grayscale read as three equal channels
    result = inspector(frame)
    assert result.raw_score == pytest.approx(rows["002_hole.png"], rel=1e-4)  # what evaluate recorded
    truth = read_image(root / "test" / "Gray" / "masks" / "002_hole.png").max(axis=2) > 0
    found = result.mask()
    assert found.shape == truth.shape  # the map comes back in the frame's own pixels
    assert (found & truth).sum() > 0.5 * truth.sum()  # and on the hole
