"""PatchCore's hyperparameters and what the rest of ad_core needs to know about it (no heavy imports)."""

from ad_core.models.spec import BACKBONE_PARAMS, ModelSpec, Param

SPEC = ModelSpec(
    name="patchcore",
    dir_name="PatchCore",
    factory="ad_core.models.patchcore.model:PatchCore",
    params=(
        *BACKBONE_PARAMS,
        Param(
            "coreset_ratio",
            float,
            0.1,
            "fraction of patch features kept in the memory bank",
            low=1e-4,
            high=1.0,
            log=True,
        ),
        Param("num_neighbors", int, 9, "neighbours used to re-weight the image score", low=1, high=50),
        Param(
            "whiten",
            float,
            0.1,
            "shrinkage s of the whitening (0: never whiten, anomalib's plain distance; 0.1 is PaDiM's): the patch "
            "features are multiplied by C^(-1/2), C their covariance shrunk toward its mean variance, "
            "(1-s) S + s tr(S)/D I, so the bank is searched in Mahalanobis distance (better on textures; it lost "
            "to 0 on a grayscale grass-like texture: compare the two on labelled defects there)",
            low=0.0,
            high=1.0,
            legacy=0.0,
        ),
        Param(
            "whiten_mode",
            str,
            "auto",
            "when to whiten (whiten > 0): auto only where the plain bank search cannot skip rows on the held-out "
            "images anyway (textures: no extra cost per frame), always (2-3x the CPU latency where it could, "
            "docs/benchmarks.md)",
            choices=("auto", "always"),
            legacy="always",
        ),
    ),
    trained=False,
    description="PatchCore (Roth et al. 2022): nearest-neighbour patch distances to a coreset memory bank",
    seed_keys=("backbone", "layers", "coreset_ratio", "num_neighbors"),
    graph="ad_core.models.patchcore.graph:EmbeddingGraph",
    graph_kind="embedding",
    head="ad_core.models.patchcore.head:PatchcoreHead",
    artifact_file="memory_bank.npz",
    artifact_key="memory_bank",
    merge_flag="load_bank",
    tune_dims=("backbone", "layers", "coreset_ratio"),
    proxy_variants=(
        {"whiten_mode": "always"},  # search in Mahalanobis distance everywhere
        {"whiten": 0.0},  # anomalib's plain distance everywhere
        {"layers": ["blocks.2", "blocks.4", "blocks.6"]},
        {"layers": ["blocks.4"]},
        {"coreset_ratio": 0.01},
        {"backbone": "tf_efficientnet_lite1"},
    ),
)
