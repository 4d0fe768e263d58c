"""Export panel: the Jetson bundle, the ONNX export and a quick inference check."""

from __future__ import annotations

import html
import os
import tarfile
import tempfile
import threading
from pathlib import Path

import ipywidgets as w

from ad_core.bundle import bundle_dir, read_meta
from ad_core.rundir import RunDir
from jupyter_ext._common import LAYOUT_WIDE, STYLE, Job, Status, device_selector, file_link


def package_for_jetson(run: str | Path) -> Path:
    """``<run>/jetson_bundle.tar.gz``: the seed's ☆ files (``pytorch/``) plus ``engine/`` when exported.

    Written to a temporary name and renamed, so a half-written archive never carries the final name.
    """
    folder = bundle_dir(run)
    rd = RunDir.of(folder)
    run_dir = rd.path
    out = run_dir / "jetson_bundle.tar.gz"
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".jetson_bundle.", suffix=".tmp")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(folder, arcname="pytorch")
            if (rd.engine / "model.onnx").is_file():
                tar.add(rd.engine, arcname="engine")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


class ExportPanel(w.VBox):
    """Package the bundle for the Jetson, export ONNX (TensorRT where present), run a quick inference check."""

    def __init__(self, run: str | Path | None = None, check_data: str | Path | None = None) -> None:
        self.run = w.Text(value=str(run or ""), description="run", style=STYLE, layout=LAYOUT_WIDE)
        self.check_data = w.Text(
            value=str(check_data or ""),
            placeholder="default: the category's test/anomaly images",
            description="check images",
            style=STYLE,
            layout=LAYOUT_WIDE,
        )
        self.fp16 = w.Checkbox(
            value=False, description="TensorRT FP16 (where TensorRT exists)", indent=False,
            layout=w.Layout(width="auto"),
        )  # fmt: skip
        self.device = device_selector("check on")
        auto = w.Layout(width="auto")
        self.package_button = w.Button(description="Package for Jetson", icon="archive", layout=auto)
        self.export_button = w.Button(description="Export ONNX", button_style="primary", icon="cogs", layout=auto)
        self.check_button = w.Button(description="Quick check", icon="check", layout=auto)
        self.status = Status()
        self.output = w.HTML()
        self.job = None
        self.result = None
        self.report = None
        super().__init__(
            [
                self.run,
                self.check_data,
                self.fp16,
                self.device,
                w.HBox([self.package_button, self.export_button, self.check_button]),
                self.status,
                self.output,
            ]
        )
        self.package_button.on_click(lambda _: self.package())
        self.export_button.on_click(lambda _: self.export())
        self.check_button.on_click(lambda _: self.check())

    def set_run(self, run: str | Path) -> None:
        """Work on this run (the Train panel calls this)."""
        self.run.value = str(run)

    def _run_dir(self) -> Path:
        return RunDir.of(bundle_dir(self.run.value)).path

    def _start(self, what: str, work, done) -> Job | None:
        if self.job is not None and self.job.running:
            self.status.error("busy: wait for the current step to finish")
            return None
        self.status.info(f"{what} ...")
        self.job = Job(work, done, self.status.error).start()
        return self.job

    def package(self) -> Job | None:
        """Write ``jetson_bundle.tar.gz`` in the background."""

        def work(_: threading.Event):
            return package_for_jetson(self.run.value)

        return self._start("packaging", work, lambda out: self.status.ok("Jetson bundle written:", file_link(out)))

    def export(self) -> Job | None:
        """Export ONNX (and a TensorRT engine where possible) into ``<run>/engine`` in the background."""

        def work(_: threading.Event):
            from ad_core.convert import convtrt

            folder = bundle_dir(self.run.value)
            return convtrt(read_meta(folder)["model"], None, folder, RunDir.of(folder).engine, fp16=self.fp16.value)

        def done(result) -> None:
            self.result = result
            self.status.ok(result.message.splitlines()[0], file_link(result.onnx.parent))

        return self._start("exporting", work, done)

    def check(self) -> Job | None:
        """Score a few images with the exported engine (ONNX Runtime on a PC) and show the summary."""

        def work(_: threading.Event):
            from ad_core.data.layout import resolve_category
            from ad_core.infer import infer

            run = RunDir.of(bundle_dir(self.run.value))
            meta = read_meta(bundle_dir(self.run.value))
            engine = run.engine / "model.onnx"
            if not engine.is_file():
                raise FileNotFoundError(f"{engine} is missing: click 'Export ONNX' first")
            data = self.check_data.value.strip()
            if not data:
                test = resolve_category(meta["data_root"], meta["category"]).test
                anomalies = [s.path for s in test if s.label == 1]
                if not anomalies:
                    raise FileNotFoundError("no test/anomaly images to check with: name a folder in 'check images'")
                data = str(anomalies[0].parent)
            out = run.engine / f"result_{meta['model']}.csv"
            return infer(meta["model"], engine, data, out=out, progress=False, device=self.device.value)

        def done(report) -> None:
            self.report = report
            self.output.value = f"<pre style='white-space:pre-wrap'>{html.escape(report.summary())}</pre>"
            self.status.ok(f"checked {len(report.rows)} images")

        return self._start("checking", work, done)
