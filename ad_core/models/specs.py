"""The registered models and their hyperparameters (seed 001's table plus our own options).

This module imports only the registry: the CLI, the tuner's search space and the panels' forms are
built from it without importing torch or anomalib. Each spec names its class as ``"module:Class"``.
Registration order is listing order.
"""

from ad_core.models.registry import ModelSpec, Param, register_model

BACKBONE_PARAMS = (
    Param(
        "backbone",
        str,
        "tf_efficientnet_lite0",
        "ImageNet CNN the features come from (tf_efficientnet_lite0 works offline; others need weights)",
        choices=("tf_efficientnet_lite0", "resnet18", "resnet34", "resnet50", "wide_resnet50_2"),
    ),
    Param(
        "layers",
        str,
        None,
        "backbone layers to take features from (default depends on the backbone)",
        multiple=True,
    ),
)


register_model(
    ModelSpec(
        name="patchcore",
        dir_name="PatchCore",
        factory="ad_core.models.patchcore:PatchCore",
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
        ),
        trained=False,
        description="PatchCore (Roth et al. 2022): nearest-neighbour patch distances to a coreset memory bank",
    )
)


register_model(
    ModelSpec(
        name="padim",
        dir_name="PaDiM",
        factory="ad_core.models.padim:Padim",
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
    )
)


register_model(
    ModelSpec(
        name="efficientad",
        dir_name="EfficientAD",
        factory="ad_core.models.efficientad:EfficientAd",
        params=(
            Param("model_size", str, "small", "student/teacher size", choices=("small", "medium")),
            Param(
                "learning_rate",
                float,
                1e-4,
                "Adam learning rate of student and auto-encoder",
                low=1e-6,
                high=1e-2,
                log=True,
            ),
            Param(
                "distill_steps",
                int,
                200,
                "teacher distillation steps when no pretrained teacher is staged",
                low=1,
                high=100000,
            ),
            Param("teacher_weights", str, None, "pretrained_teacher_<size>.pth to use instead of distilling"),
            Param(
                "penalty_dir",
                str,
                None,
                "folder of ImageNet-like images for the penalty loss (e.g. imagenette2)",
            ),
        ),
        trained=True,
        description="EfficientAD (Batzner et al. 2024): student-teacher + auto-encoder; offline teacher fallback",
    )
)


register_model(
    ModelSpec(
        name="vae",
        dir_name="VAE",
        factory="ad_core.models.vae:VAE",
        params=(
            Param(
                "latent_dim",
                int,
                128,
                "size of the latent vector (smaller = stronger compression)",
                low=2,
                high=2048,
                log=True,
            ),
            Param("learning_rate", float, 1e-3, "Adam learning rate", low=1e-5, high=1e-1, log=True),
            Param(
                "enc_channels",
                int,
                [32, 64, 128],
                "channels of the encoder blocks (each halves the size)",
                low=1,
                high=1024,
                multiple=True,
            ),
            Param("kl_weight", float, 1.0, "weight of the KL term in the loss", low=0.0, high=100.0),
        ),
        trained=True,
        description="Variational auto-encoder (seed 004); score = per-pixel reconstruction error",
    )
)
