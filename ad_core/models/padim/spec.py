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
            100,
            "number of random feature channels kept for the Gaussian",
            low=2,
            high=2048,
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
)
