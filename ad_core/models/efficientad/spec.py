"""EfficientAD's hyperparameters and what the rest of ad_core needs to know about it (no heavy imports)."""

from ad_core.models.spec import ModelSpec, Param

SPEC = ModelSpec(
    name="efficientad",
    dir_name="EfficientAD",
    factory="ad_core.models.efficientad.model:EfficientAd",
    params=(
        Param(
            "image_size",
            int,
            256,
            "side of the square image the model sees (pixels); EfficientAD's networks need a multiple of 64",
            low=256,
            high=1024,
            multiple_of=64,
        ),
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
    seed_keys=("model_size", "learning_rate"),
    tune_dims=("model_size", "learning_rate"),
    demo={"image_size": 256, "epochs": 3, "distill_steps": 30},
)
