"""The VAE's hyperparameters and what the rest of ad_core needs to know about it (no heavy imports)."""

from ad_core.models.spec import ModelSpec, Param

SPEC = ModelSpec(
    name="vae",
    dir_name="VAE",
    factory="ad_core.models.vae.model:VAE",
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
    seed_keys=("latent_dim", "learning_rate", "enc_channels"),
    tune_dims=("latent_dim", "learning_rate"),
    demo={"epochs": 40},
)
