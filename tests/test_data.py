"""Image reading, dataset layouts, the sample dataset and the VisA split."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ad_core.data.dataset import ImageDataset, check_num_workers, make_loader
from ad_core.data.images import read_image, read_mask
from ad_core.data.layout import available_categories, resolve_category
from ad_core.data.sample import CATEGORIES, build_sample_dataset
from ad_core.data.visa import download_visa, split_visa
from ad_core.errors import ConfigError, DataError
from ad_core.preprocessing import Preprocess


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)


def test_formats_are_converted_consistently(tmp_path, rgb):
    gray = rgb[:, :, 0]
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.bmp")
    Image.fromarray(rgb).save(tmp_path / "rgb.tif")
    Image.fromarray(np.dstack([rgb, np.full(gray.shape, 128, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(tmp_path / "pal.png")
    for name in ("rgb.png", "rgb.bmp", "rgb.tif", "rgba.png"):
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
        np.testing.assert_array_equal(out, rgb)
    for name in ("gray.png", "gray16.png"):
        out = read_image(tmp_path / name)
        assert out.shape == (20, 30, 3)
        np.testing.assert_array_equal(out, np.dstack([gray] * 3))
    pal = read_image(tmp_path / "pal.png")
    assert pal.shape == (20, 30, 3) and np.abs(pal.astype(int) - rgb).mean() < 40


def test_zero_byte_and_corrupt_images_name_the_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"empty\.png.*empty \(0 bytes\)"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(DataError, match=r"bad\.jpg.*corrupt"):
        read_image(tmp_path / "bad.jpg")


def test_mask_reading_and_resize(tmp_path):
    m = np.zeros((40, 40), np.uint8)
    m[10:20, 10:20] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").sum() == 100
    assert read_mask(tmp_path / "m.png", (20, 20)).sum() == 25


def test_sample_dataset_is_deterministic_and_complete(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build_sample_dataset(a, n_train=4, n_test_normal=2, n_anomaly=8)
    build_sample_dataset(b, n_train=4, n_test_normal=2, n_anomaly=8)

    def digest(root: Path) -> dict:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.png")}

    assert digest(a) == digest(b) and len(digest(a)) == 3 * (4 + 2 + 8 + 8)
    for cat in CATEGORIES:
        data = resolve_category(a, cat, require_test=True)
        assert data.counts() == {"train": 4, "test_normal": 2, "test_anomaly": 8}
        assert data.has_masks
        kinds = {s.path.stem.split("_", 1)[1] for s in data.test if s.label}
        assert {"scratch", "stain", "hole", "faint_stain", "foreign_texture"} <= kinds
        for s in data.test:
            if s.label:
                assert read_mask(s.mask).any()
    assert build_sample_dataset(a) == []  # kept, not rebuilt


def _mvtec_tree(root: Path) -> None:
    img = np.zeros((16, 16, 3), np.uint8)
    for sub in ("train/good", "test/good", "test/crack", "ground_truth/crack"):
        (root / "widget" / sub).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(img).save(root / "widget" / "train" / "good" / f"{i:03d}.png")
    Image.fromarray(img).save(root / "widget" / "test" / "good" / "000.png")
    Image.fromarray(img).save(root / "widget" / "test" / "crack" / "000.png")
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(root / "widget" / "ground_truth" / "crack" / "000_mask.png")


def test_mvtec_layout_is_read_as_is(tmp_path):
    _mvtec_tree(tmp_path)
    for name in ("widget", "MVTec_widget"):
        data = resolve_category(tmp_path, name, require_test=True)
        assert data.layout == "mvtec" and data.counts() == {"train": 3, "test_normal": 1, "test_anomaly": 1}
        assert data.has_masks and [s.defect for s in data.test] == ["crack", "good"]


def test_btad_and_mvtec_ad_2_layouts_are_read_as_is(tmp_path):
    img, full = np.zeros((16, 16, 3), np.uint8), np.full((16, 16), 255, np.uint8)
    btad = tmp_path / "BTech" / "03"  # BTAD: ok / ko folders, .bmp images, .png masks of the same stem
    for sub in ("train/ok", "test/ok", "test/ko", "ground_truth/ko"):
        (btad / sub).mkdir(parents=True)
    for i in range(2):
        Image.fromarray(img).save(btad / "train" / "ok" / f"{i:04d}.bmp")
    Image.fromarray(img).save(btad / "test" / "ok" / "0100.bmp")
    Image.fromarray(img).save(btad / "test" / "ko" / "0101.bmp")
    Image.fromarray(full).save(btad / "ground_truth" / "ko" / "0101.png")
    assert available_categories(tmp_path / "BTech") == ["03"]
    data = resolve_category(tmp_path / "BTech", "03", require_test=True)
    assert data.counts() == {"train": 2, "test_normal": 1, "test_anomaly": 1} and data.has_masks
    assert [(s.path.name, s.defect) for s in data.test] == [("0101.bmp", "ko"), ("0100.bmp", "good")]

    ad2 = tmp_path / "ad2" / "can"  # MVTec AD 2: the labelled test split is test_public/, its masks inside it
    for sub in ("train/good", "validation/good", "test_public/good", "test_public/bad", "test_public/ground_truth/bad"):
        (ad2 / sub).mkdir(parents=True)
    (ad2 / "test_private").mkdir()
    Image.fromarray(img).save(ad2 / "train" / "good" / "000_regular.png")
    Image.fromarray(img).save(ad2 / "validation" / "good" / "001_regular.png")
    Image.fromarray(img).save(ad2 / "test_private" / "000_regular.png")
    Image.fromarray(img).save(ad2 / "test_public" / "good" / "000_regular.png")
    Image.fromarray(img).save(ad2 / "test_public" / "bad" / "000_regular.png")
    Image.fromarray(full).save(ad2 / "test_public" / "ground_truth" / "bad" / "000_regular_mask.png")
    data = resolve_category(tmp_path / "ad2", "MVTec_can", require_test=True)
    assert data.counts() == {"train": 1, "test_normal": 1, "test_anomaly": 1} and data.has_masks
    assert [s.defect for s in data.test] == ["bad", "good"]
    (ad2 / "test_public" / "bad" / "000_regular.png").unlink()
    with pytest.raises(DataError, match=r"can/test_public needs both normal and anomalous"):
        resolve_category(tmp_path / "ad2", "can", require_test=True)


def test_a_mask_folder_is_the_union_of_its_parts(tmp_path):
    parts = tmp_path / "ground_truth" / "logical_anomalies" / "000"
    parts.mkdir(parents=True)
    a, b = np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)
    a[1, 1], b[6, 5] = 255, 1
    Image.fromarray(a).save(parts / "000.png")
    Image.fromarray(b).save(parts / "001.png")
    mask = read_mask(parts)
    assert mask.sum() == 2 and mask[1, 1] and mask[6, 5]
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(parts / "002.png")
    with pytest.raises(DataError, match=r"000: its masks differ in size"):
        read_mask(parts)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="a mask folder with no mask images"):
        read_mask(tmp_path / "empty")


def test_missing_and_empty_categories(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        resolve_category(tmp_path / "nowhere", "x")
    (tmp_path / "train" / "Empty_cat").mkdir(parents=True)
    (tmp_path / "train" / "Other").mkdir(parents=True)
    with pytest.raises(DataError, match=r"Empty_cat has no images"):
        resolve_category(tmp_path, "Empty_cat")
    with pytest.raises(DataError, match=r"categories found there: Empty_cat, Other"):
        resolve_category(tmp_path, "Missing")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "train" / "Other" / "a.png")
    with pytest.raises(DataError, match="needs both normal and anomalous"):
        resolve_category(tmp_path, "Other", require_test=True)


def test_num_workers_rules_and_parallel_loading(tmp_path, rgb):
    with pytest.raises(ConfigError, match="0 or more"):
        check_num_workers(-1)
    for i in range(4):
        Image.fromarray(rgb).save(tmp_path / f"{i}.png")
    ds = ImageDataset(sorted(tmp_path.glob("*.png")), Preprocess(32))
    batches = list(make_loader(ds, 2, num_workers=2))
    assert len(batches) == 2 and batches[0]["image"].shape == (2, 3, 32, 32)


@pytest.mark.parametrize("shape", [(480, 640), (300, 300), (64, 80)], ids=["camera", "elpv", "upscale"])
def test_the_float_resize_feeds_the_model_what_anomalibs_pre_processor_does(shape):
    """The default resize is anomalib's (torchvision, antialiased, on floats), without torch in the deployed path."""
    import torch
    from anomalib.models.components.base.anomalib_module import AnomalibModule
    from torchvision.transforms.v2.functional import to_dtype

    rgb = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours = Preprocess(96).array(rgb)
    transform = AnomalibModule.configure_pre_processor(image_size=(96, 96)).transform
    theirs = transform(to_dtype(torch.from_numpy(rgb).permute(2, 0, 1), torch.float32, scale=True)).numpy()
    np.testing.assert_allclose(ours, theirs, atol=3e-5)  # 1e-5 of a [0, 1] pixel (a grey level is 4e-3)
    # the 8-bit resize that older runs record: PIL on uint8, within a grey level of the float one
    old = Preprocess(96, resize="bilinear").planes(rgb)
    resized_8bit = np.asarray(Image.fromarray(rgb).resize((96, 96), Image.BILINEAR))
    np.testing.assert_array_equal(old, resized_8bit.transpose(2, 0, 1))
    assert 0 < np.abs(old - Preprocess(96).planes(rgb)).max() <= 1.0


def test_a_faint_line_survives_the_float_resize_and_not_the_8_bit_one():
    """Why the default changed: ELPV's cracks are a grey level or two; rounding after a 3x shrink erases them."""
    grey = np.full((300, 300, 3), 120, np.uint8)
    grey[:, 150] += 1  # a one-pixel line, one grey level brighter
    size = 100
    float_map = Preprocess(size).planes(grey)[0]
    eight_bit = Preprocess(size, resize="bilinear").planes(grey)[0]
    assert float_map.max() - float_map.min() > 0.2  # the line is still there (a third of a level)
    assert eight_bit.max() == eight_bit.min() == 120  # rounded away
    # an image already at size is passed through unchanged by both
    same = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    for method in ("bilinear_float", "bilinear"):
        np.testing.assert_array_equal(Preprocess(size, resize=method).planes(same), same.transpose(2, 0, 1))


def test_preprocessing_names_an_unknown_resize_and_reads_older_meta():
    with pytest.raises(ConfigError, match=r"preprocessing.resize: 'bicubic' .*bilinear_float, bilinear"):
        Preprocess(96, resize="bicubic")
    recorded = Preprocess(96).to_dict()
    assert Preprocess.from_dict(recorded) == Preprocess(96)
    del recorded["resize"]  # a meta.json from before the key: the 8-bit resize it was made with
    assert Preprocess.from_dict(recorded).resize == "bilinear"


def _fake_visa(root: Path) -> None:
    rows = []
    for obj in ("candle", "pcb1"):
        for label, sub, n in (("normal", "Normal", 5), ("anomaly", "Anomaly", 3)):
            d = root / "VisA" / obj / "Data" / "Images" / sub
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(np.full((8, 8, 3), i * 20, np.uint8)).save(d / f"{i:03d}.JPG", format="JPEG")
                mask = ""
                if label == "anomaly":
                    md = root / "VisA" / obj / "Data" / "Masks" / "Anomaly"
                    md.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(np.full((8, 8), 1, np.uint8)).save(md / f"{i:03d}.png")
                    mask = f"{obj}/Data/Masks/Anomaly/{i:03d}.png"
                split = "train" if label == "normal" and i < 3 else "test"
                rows.append([obj, split, label, f"{obj}/Data/Images/{sub}/{i:03d}.JPG", mask])
    (root / "VisA" / "split_csv").mkdir(parents=True)
    with open(root / "VisA" / "split_csv" / "1cls.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["object", "split", "label", "image", "mask"])
        w.writerows(rows)


@pytest.mark.parametrize("from_archive", [False, True])
def test_visa_split_follows_split_csv(tmp_path, from_archive):
    _fake_visa(tmp_path / "dl")
    source = tmp_path / "dl" / "VisA"
    if from_archive:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(source, arcname="VisA")
        (tmp_path / "dl" / "VisA_20220922.tar").write_bytes(buf.getvalue())
        source = tmp_path / "dl" / "VisA_20220922.tar"
    counts = split_visa("candle", source, tmp_path / "data")
    assert counts == {"train": 3, "test_normal": 2, "test_anomaly": 3, "masks": 3}
    data = resolve_category(tmp_path / "data", "VisA_candle", require_test=True)
    assert data.counts() == {"train": 3, "test_normal": 2, "test_anomaly": 3} and data.has_masks
    with pytest.raises(DataError, match="choose one of candle, pcb1"):
        split_visa("capsules", source, tmp_path / "data")


def test_visa_download_offline_says_what_to_fetch(tmp_path):
    with pytest.raises(DataError, match=r"put it at .*VisA_20220922\.tar"):
        download_visa(tmp_path, url="http://127.0.0.1:9/VisA_20220922.tar")
    assert not list(tmp_path.glob("*.part")) and not (tmp_path / "VisA_20220922.tar").exists()


def _brick_as(layout: str, sample_root: Path, product: Path) -> None:
    """The bundled brick as BTAD stores a product (``ok`` / ``ko``, .bmp images, .png masks) or as MVTec LOCO
    does (``good`` / a defect folder, each image's mask a folder of parts: here its left and right halves)."""
    normal, defect = ("ok", "ko") if layout == "btad" else ("good", "structural_anomalies")
    suffix = ".bmp" if layout == "btad" else ".png"
    src = sample_root / "test" / "Sample_brick"
    for sub in (f"train/{normal}", f"test/{normal}", f"test/{defect}", f"ground_truth/{defect}"):
        (product / sub).mkdir(parents=True)
    for folder, dest in (
        (sample_root / "train" / "Sample_brick", f"train/{normal}"),
        (src / "normal", f"test/{normal}"),
    ):
        for p in sorted(folder.glob("*.png")):
            Image.open(p).save(product / dest / f"{p.stem}{suffix}")
    for p in sorted((src / "anomaly").glob("*.png")):
        Image.open(p).save(product / "test" / defect / f"{p.stem}{suffix}")
        mask = np.asarray(Image.open(src / "masks" / p.name).convert("L"))
        if layout == "btad":
            Image.fromarray(mask).save(product / "ground_truth" / defect / p.name)
            continue
        parts = product / "ground_truth" / defect / p.stem
        parts.mkdir()
        half = mask.shape[1] // 2
        for n, keep in enumerate((np.s_[:, :half], np.s_[:, half:])):
            piece = np.zeros_like(mask)
            piece[keep] = mask[keep]
            Image.fromarray(piece).save(parts / f"{n:03d}.png")


def test_btad_and_loco_shaped_sets_train_and_test_from_the_command_line(sample_root, tmp_path, capsys):
    from ad_core.cli import main

    metrics = {}
    for layout in ("btad", "loco"):
        _brick_as(layout, sample_root, tmp_path / layout / "01")
        flags = ["--data_root", str(tmp_path / layout), "--models_root", str(tmp_path / f"models_{layout}")]
        rc = main(["train", "--model", "padim", "--category", "01", *flags, "--image_size", "96", "--test"])
        assert rc == 0, capsys.readouterr().err
        (run,) = (tmp_path / f"models_{layout}" / "PaDiM" / "01").iterdir()
        metrics[layout] = json.loads((run / "test_result" / "metrics.json").read_text())
        assert sorted(p.name for p in (run / "test_result" / "images" / "normal").glob("*_overlay.png"))[0] == (
            "000_overlay.png"
        )
    # masks found and scored, defects separated (measured 1.000 image, 0.980 pixel AUROC; a blind model: about 0.5)
    assert metrics["btad"]["pixel_auroc"] >= 0.8 and metrics["btad"]["image_auroc"] >= 0.75, metrics
    # the same pixels and masks in the other layout, the LOCO masks as two parts each: the same figures
    for key in ("image_auroc", "pixel_auroc"):
        assert metrics["loco"][key] == pytest.approx(metrics["btad"][key], abs=1e-6)
