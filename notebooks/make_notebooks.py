"""Write notebooks/<Model>.ipynb: seed 000's cells 0-4 (device, settings, tuning, training, test).

One template, four models, so the notebooks never drift apart. Run ``make notebooks`` after
editing; the test suite executes the committed notebooks top to bottom on the sample data.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

# per model: name in ad-core, run-directory name, image size, tuning trials, epochs (trained models)
MODELS = {
    "PatchCore": ("patchcore", 256, 10, None),
    "PaDiM": ("padim", 256, 10, None),
    "EfficientAD": ("efficientad", 256, 4, 20),
    "VAE": ("vae", 256, 6, 60),
}


def cells(title: str, model: str, image_size: int, trials: int, epochs: int | None) -> list:
    extra = (
        '{"distill_steps": int(os.environ.get("AD_NOTEBOOK_DISTILL_STEPS", 200))}'
        if model == "efficientad"
        else "{}"
    )
    epochs_line = (
        f'EPOCHS = int(os.environ.get("AD_NOTEBOOK_EPOCHS", {epochs}))  # ★ maximum epochs (early stopping on)\n'
        if epochs
        else "EPOCHS = None  # no epochs: the model is fitted in one pass over the normal images\n"
    )
    return [
        new_markdown_cell(
            f"# {title}: tune, train and test\n\n"
            "Seed 000's journey in five cells. Run them top to bottom; cells 2 and 4 can be skipped.\n"
            "Everything runs in the panels too: `AnomalyStudio()` shows them all as tabs."
        ),
        new_markdown_cell("## 0. Device check"),
        new_code_cell(
            "import torch\n\n"
            "from ad_core.device import cuda_problem, resolve\n\n"
            'DEVICE = resolve("auto")  # ★ "cpu", "cuda" or "cuda:1" to choose; auto takes the GPU when there is one\n'
            'print("torch", torch.__version__, "| CUDA build", torch.version.cuda)\n'
            'print("device that will be used:", DEVICE.name, f"({DEVICE.description}, {DEVICE.precision})")\n'
            "if not DEVICE.is_cuda:\n"
            '    print("not CUDA because:", cuda_problem() or "auto chose the CPU")'
        ),
        new_markdown_cell(
            "## 1. Settings\n\n"
            "★ marks what you may change. `IMAGE_SIZE` is the size the model sees (images are resized),\n"
            "`IMAGE_THRESHOLD` the normalised decision threshold (0.5 = the automatic threshold found by the\n"
            "test), `CATEGORY` the folder under `data/train/`. Without data, the bundled sample is built."
        ),
        new_code_cell(
            "import os\n"
            "from pathlib import Path\n\n"
            "from ad_core.data.sample import build_sample_dataset\n\n"
            f'MODEL = "{model}"\n'
            f'IMAGE_SIZE = int(os.environ.get("AD_NOTEBOOK_IMAGE_SIZE", {image_size}))  # ★\n'
            "IMAGE_THRESHOLD = 0.5  # ★ normalised threshold\n"
            'CATEGORY = "Sample_brick"  # ★ e.g. VisA_pipe_fryum or MVTec_bottle\n'
            'DATA_ROOT = Path("data")  # ★\n'
            'MODELS_ROOT = Path("models")\n'
            f'TRIALS = int(os.environ.get("AD_NOTEBOOK_TRIALS", {trials}))  # ★ tuning trials\n'
            f"{epochs_line}"
            f"EXTRA = {extra}  # ★ fixed hyperparameters of tuning and training\n\n"
            'if not (DATA_ROOT / "train" / CATEGORY).is_dir():\n'
            "    build_sample_dataset(DATA_ROOT)\n\n"
            "from jupyter_ext import DataPanel\n\n"
            "DataPanel(DATA_ROOT, CATEGORY)"
        ),
        new_markdown_cell(
            "## 2. Hyperparameter search (Optuna)\n\n"
            "Uses normal *and* anomalous test images, so it is a supervised step; skip it to train with\n"
            "the defaults. Edit the search space in the panel, then press Start (the next cell does it for\n"
            "you). Finished trials are kept in `models/<Model>/<CATEGORY>/optuna.db`: running again resumes."
        ),
        new_code_cell(
            "from jupyter_ext import TunePanel\n\n"
            "tuner = TunePanel(DATA_ROOT, CATEGORY, MODELS_ROOT, model=MODEL, image_size=IMAGE_SIZE)\n"
            "tuner.trials.value = max(TRIALS, 1)\n"
            "tuner.device.value = DEVICE.name\n"
            "tuner.epochs.value = EPOCHS  # empty for models fitted in one pass\n"
            "for key, value in EXTRA.items():\n"
            '    tuner.space.value += f"{key}: {value}\\n"\n'
            "tuner"
        ),
        new_code_cell(
            "if TRIALS:  # 0 skips the search (the seed marks this step optional)\n"
            "    tuner.run()  # same as pressing Start and waiting; raises with the message if it cannot\n"
            "    print(tuner.status.text)\n"
            "best = tuner.result.best_params if tuner.result else None\n"
            "best"
        ),
        new_markdown_cell(
            "## 3. Training\n\n"
            "Normal images only. The form starts from the best trial when cell 2 ran, otherwise from\n"
            "the defaults. The run goes to `models/<Model>/<CATEGORY>/<YYYYMMDD_HHMMSS>/`\n"
            "(`pytorch/model.pth`, `pytorch/meta.json`, and `memory_bank.npz` / `stats.npz`: the files\n"
            "for the Jetson)."
        ),
        new_code_cell(
            "from jupyter_ext import TrainPanel\n\n"
            "trainer = TrainPanel(DATA_ROOT, CATEGORY, MODELS_ROOT, model=MODEL)\n"
            "trainer.device.value = DEVICE.name\n"
            "if best:\n"
            '    trainer.set_params(MODEL, best, {"epochs": EPOCHS}, run_dir=tuner.result.run_dir)\n'
            "else:\n"
            '    trainer.set_params(MODEL, {"image_size": IMAGE_SIZE, **EXTRA}, {"epochs": EPOCHS})\n'
            "trainer"
        ),
        new_code_cell(
            "trainer.run()  # same as pressing Start and waiting; raises with the message if it cannot\n"
            "print(trainer.status.text)\n"
            "RUN = trainer.run_dir\n"
            "RUN"
        ),
        new_markdown_cell(
            "## 4. Performance test\n\n"
            "The panel tested the run on the test split: AUROC, best F1, the automatic threshold\n"
            "(`image_threshold_auto` in meta.json), `test_result/predictions.csv` and pictures.\n"
            "Explore the threshold below and press *Save to meta.json* to deploy another one."
        ),
        new_code_cell(
            "from jupyter_ext import ThresholdExplorer\n\n"
            "report = trainer.report\n"
            "print(f\"image AUROC {report['image_auroc']:.4f}, best F1 {report['image_f1']:.4f}, \"\n"
            "      f\"automatic threshold (raw) {report['image_threshold_auto']:.6g}\")\n"
            "explorer = ThresholdExplorer(RUN)\n"
            "explorer.set_threshold(IMAGE_THRESHOLD)\n"
            "explorer"
        ),
    ]


def main() -> None:
    """Write the four notebooks."""
    for title, (model, size, trials, epochs) in MODELS.items():
        nb = new_notebook(cells=cells(title, model, size, trials, epochs))
        for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives the same bytes
            cell.id = f"{title.lower()}-{i:02d}"
        nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.write(nb, HERE / f"{title}.ipynb")
        print("wrote", HERE / f"{title}.ipynb")


if __name__ == "__main__":
    main()
