"""The folders ad-inspect writes, and the one way they are written: staged, then put in place.

* :class:`RunDir`: seed 002's run directory ``models/<Model>/<CATEGORY>/<YYYYMMDD_HHMMSS>/`` with
  ``pytorch/`` (the bundle), ``engine/`` (convtrt's output), ``param/``, ``test_result/`` and ``logs/``,
  and the reader of ``test_result/predictions.csv``. (Seed 002's ``checkpoint/best.ckpt`` is not
  written: it repeated ``pytorch/model.pth``; see README, "Run directory".)
* The seed's Jetson folder ``models/<Model>/{model.pth, meta.json, memory_bank.npz | stats.npz,
  engine/, retrain/}`` is a bundle folder with its engine and retrain outputs beside it:
  :func:`ad_core.bundle.bundle_dir` reads it, and ``convtrt`` / ``retrain`` write into it.
* :func:`staged`: every folder is assembled in a hidden ``.<name>.partial-*`` sibling and only put
  in place when complete, so a crash or Ctrl-C leaves nothing that looks finished and nothing that
  was already saved is lost.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ad_core.errors import BundleError

RUN_SUBDIRS = ("pytorch", "logs", "param", "test_result")
PREDICTION_FIELDS = ("file", "label", "raw_score", "normalized_score", "prediction")
STAGING_MODES = ("new", "replace", "merge")


@dataclass(frozen=True)
class RunDir:
    """A run directory (seed 002); every path into it is named here."""

    path: Path

    @classmethod
    def of(cls, path: str | Path) -> RunDir:
        """The run directory of a run, its ``pytorch/`` folder or a file inside it."""
        p = Path(path)
        if p.is_file():
            p = p.parent
        return cls(p.parent if p.name == "pytorch" else p)

    pytorch = property(lambda self: self.path / "pytorch", doc="the bundle that moves to the Jetson")
    engine = property(lambda self: self.path / "engine", doc="convtrt's output: model.onnx (+ model.plan)")
    param = property(lambda self: self.path / "param", doc="params.yaml and the tuning files")
    test_result = property(lambda self: self.path / "test_result", doc="ad-core test's output")
    logs = property(lambda self: self.path / "logs", doc="history.csv, train.json, loss_curve.png")

    @property
    def trained(self) -> bool:
        """Whether the run holds a trained bundle (a tuning run holds only ``param/`` until trained)."""
        return (self.pytorch / "meta.json").is_file()

    @property
    def predictions_csv(self) -> Path:
        """``test_result/predictions.csv``."""
        return self.test_result / "predictions.csv"

    def predictions(self) -> list[dict[str, str]]:
        """The rows of ``test_result/predictions.csv``; a clear error when the run was never tested."""
        path = self.predictions_csv
        if not path.is_file():
            raise BundleError(
                f"{self.path} has no test result ({path} is missing): test it first "
                f"(`ad-core test --run {self.path}` or the Train panel's 'test after training')"
            )
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or {"file", "label", "raw_score"} - set(rows[0]):
            raise BundleError(f"{path}: expected columns file, label, raw_score")
        return rows


class Staged:
    """A folder being assembled next to its final place; see :func:`staged`."""

    def __init__(self, final: Path, mode: str, keep: tuple[str, ...]) -> None:
        if mode not in STAGING_MODES:
            raise ValueError(f"staging mode {mode!r}: choose one of {', '.join(STAGING_MODES)}")
        self.final, self.mode, self.keep = Path(final), mode, keep
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(dir=self.final.parent, prefix=f".{self.final.name}.partial-"))

    def commit(self) -> Path:
        """Put the staged folder in place; returns the final path (``new`` may have added a ``_N`` suffix)."""
        if self.mode == "new":
            return self._commit_new()
        if self.mode == "merge":
            self._merge()
            return self.final
        for name in self.keep:  # files of the old folder that the new one must carry on (tuning's param/)
            for f in sorted((self.final / name).glob("*")) if (self.final / name).is_dir() else ():
                target = self.path / name / f.name
                if f.is_file() and not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, target)
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
            os.rename(self.final, old)
            os.rename(self.path, self.final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.path, self.final)
        return self.final

    def _commit_new(self) -> Path:
        for n in range(1, 1000):
            final = self.final.with_name(self.final.name if n == 1 else f"{self.final.name}_{n}")
            if final.exists():
                continue
            try:
                os.rename(self.path, final)
            except OSError:
                continue
            self.final = final
            return final
        raise BundleError(f"could not find a free folder name for {self.final}")

    def _merge(self) -> None:
        """Move each staged file over its counterpart; meta.json last, so a crash leaves the old meta.json in force."""
        self.final.mkdir(parents=True, exist_ok=True)
        files = sorted((p for p in self.path.rglob("*") if p.is_file()), key=lambda p: p.name == "meta.json")
        for src in files:
            dst = self.final / src.relative_to(self.path)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        shutil.rmtree(self.path, ignore_errors=True)

    def discard(self) -> None:
        """Remove what was staged."""
        shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def staged(final: str | Path, mode: str = "replace", keep: tuple[str, ...] = ()) -> Iterator[Staged]:
    """Assemble a folder in a hidden sibling and put it in place only if the block completes.

    Modes: ``"new"``: ``final`` must be new (a taken name gets a ``_2``, ``_3`` ... suffix; the run
    directory); ``"replace"``: an existing ``final`` is swapped out whole (``test_result/``), keeping
    the files of its ``keep`` subfolders that the staged folder lacks; ``"merge"``: the staged files
    replace their counterparts one by one, ``meta.json`` last, and other files in ``final`` stay
    (``convtrt`` / ``retrain`` output folders). On an exception nothing is put in place.
    """
    stage = Staged(Path(final), mode, keep)
    try:
        yield stage
        stage.commit()
    except BaseException:
        stage.discard()
        raise
