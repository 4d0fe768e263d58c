"""PaDiM's hyperparameters and what the rest of ad_core needs to know about it (no heavy imports)."""

from ad_core.models.spec import BACKBONE_PARAMS, ModelSpec, Param

SPEC = ModelSpec(
    name="padim",
    dir_name="PaDiM",
    factory="ad_core.models.padim.model:Padim",
    params=(
        *BACKBONE_PARAMS,
        Param(
            "n_features",
            int,
            None,
            "feature channels kept for the Gaussian, a seeded random subset (default: all of the layers' channels)",
            low=2,
            high=2048,
        ),
        Param(
            "shrinkage",
            float,
            0.1,
            "covariance shrinkage toward its mean variance: (1-s) S + s tr(S)/C I (0: anomalib's plain S + 0.01 I)",
            low=0.0,
            high=1.0,
            legacy=0.0,
        ),
        Param(
            "feature_pool",
            int,
            3,
            "side of the local average over each layer's features before the Gaussian (1: none, as anomalib)",
            low=1,
            high=9,
            legacy=1,
        ),
        Param(
            "pool_min_side",
            int,
            16,
            "pool only the layers whose feature map is at least this many positions across (0: every layer); "
            "a 3x3 window on a coarser map averages over a large part of the object",
            low=0,
            high=1024,
            legacy=0,
        ),
    ),
    trained=False,
    description="PaDiM (Defard et al. 2021): per-position Gaussian of patch features, Mahalanobis distance",
    seed_keys=("backbone", "layers", "n_features"),
    graph="ad_core.models.padim.graph:PadimGraph",
    artifact_file="stats.npz",
    artifact_key="stats",
    artifact_in_graph=True,
    merge_flag="load_stats",
    tune_dims=("backbone", "layers", "n_features"),
    proxy_variants=(
        {"n_features": 100, "shrinkage": 0.0, "feature_pool": 1},  # anomalib's PaDiM
        {"n_features": 32},
        {"layers": ["blocks.1", "blocks.2", "blocks.4"]},
        {"layers": ["blocks.4"]},
        {"backbone": "tf_efficientnet_lite1"},
    ),
)
