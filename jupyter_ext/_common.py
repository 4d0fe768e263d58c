"""Shared pieces of the panels: status lines, pictures, forms from the registry (jobs: :mod:`ad_core.jobs`)."""

from __future__ import annotations

import html
import io
import traceback
from pathlib import Path
from typing import Any

import ipywidgets as w
import numpy as np
from PIL import Image

from ad_core.errors import ADCoreError, TrainingStopped
from ad_core.jobs import Job
from ad_core.models.registry import Param

__all__ = [
    "Job",
    "ParamField",
    "Status",
    "card",
    "device_selector",
    "file_link",
    "param_widget",
    "png_bytes",
    "read_param",
    "show_png",
    "thumbnail",
    "write_param",
]

LAYOUT_WIDE = w.Layout(width="640px")
STYLE = {"description_width": "150px"}


class Startable:
    """``run()``: what a notebook cell does instead of pressing Start and waiting."""

    def run(self) -> Job:
        """Start, wait for the end, return the job; a start refused or a run that failed raises with its message."""
        job = self.begin()  # type: ignore[attr-defined]
        if job is None:
            raise ValueError(f"{type(self).__name__} did not start: {self.status.text}")  # type: ignore[attr-defined]
        job.join()
        if job.state == "failed":
            raise RuntimeError(f"{type(self).__name__} failed: {job.message or job.error}")
        return job


class Status(w.HTML):
    """One line telling the user what is happening, what went wrong, or what came out."""

    def info(self, text: str) -> None:
        """Neutral progress text."""
        self.value = f"<span>{html.escape(text)}</span>"

    def ok(self, text: str, extra_html: str = "") -> None:
        """Success in green, optionally followed by trusted HTML (links)."""
        self.value = f"<span style='color:#1a7f37'>&#10004; {html.escape(text)}</span>{extra_html}"

    def error(self, exc: BaseException | str) -> None:
        """An error in red: our errors as their message, stops as a note, anything else with its type."""
        if isinstance(exc, TrainingStopped):
            self.value = "<span style='color:#9a6700'>&#9632; stopped on request</span>"
            return
        if isinstance(exc, str):
            text = exc
        elif isinstance(exc, ADCoreError):
            text = str(exc)
        else:
            text = f"{type(exc).__name__}: {exc}"
            tb = html.escape("".join(traceback.format_exception(exc))[-3000:])
            self.value = (
                f"<span style='color:#cf222e'>&#10008; {html.escape(text)}</span>"
                f"<details><summary>details</summary><pre>{tb}</pre></details>"
            )
            return
        self.value = f"<span style='color:#cf222e'>&#10008; {html.escape(text)}</span>"

    @property
    def text(self) -> str:
        """The status without markup (tests, logs)."""
        import re

        return html.unescape(re.sub(r"<[^>]+>", "", self.value))


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def thumbnail(path: str | Path | np.ndarray, size: int = 112) -> bytes:
    """A small PNG of an image file or an RGB array."""
    from ad_core.data.images import read_image

    rgb = read_image(path) if not isinstance(path, np.ndarray) else path
    img = Image.fromarray(rgb)
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def card(png: bytes, caption: str, size: int = 112) -> w.VBox:
    """A picture with a caption under it."""
    return w.VBox(
        [w.Image(value=png, format="png", width=size), w.HTML(f"<small>{html.escape(caption)}</small>")],
        layout=w.Layout(width=f"{size + 8}px", margin="2px"),
    )


def device_selector(description: str = "device") -> w.Dropdown:
    """Where the work runs: ``auto`` (the GPU when PyTorch sees one), ``cpu``, and each CUDA device by name."""
    from ad_core.device import available

    dropdown = w.Dropdown(options=[(label, value) for value, label in available()], value="auto", style=STYLE)
    dropdown.description = description
    dropdown.tooltip = "auto trains on the GPU when PyTorch sees one, else on the CPU"
    return dropdown


def defects_selector() -> w.Dropdown:
    """Which synthetic defects a proxy scores on (``--proxy_kinds``); its value is a kind, or "" for the defaults."""
    box = w.Dropdown(
        options=[("broad (cut-paste, scar, blend, blob)", ""), ("thin lines (cracks, scratches)", "crack")],
        value="",
        description="defects like",
        style=STYLE,
        layout=w.Layout(width="440px"),
    )
    box.tooltip = (
        "the synthetic defects the proxy scores on (--proxy_kinds): thin lines where the line's defects are "
        "hairline cracks or scratches"
    )
    return box


class ParamField(w.VBox):
    """One hyperparameter in a form: the input, never clamped; the allowed values and help under it; an error beside it.

    A browser's number box clamps what is typed into its bounds without a word (-5 became 32); this
    field keeps what the person typed and says next to it what is wrong and what is allowed.
    """

    def __init__(self, p: Param) -> None:
        self.param = p
        common = {"description": p.name, "style": STYLE, "description_allow_html": False}
        if p.choices is not None and not p.multiple:
            self.input = w.Dropdown(options=list(p.choices), value=p.default, **common, layout=w.Layout(width="420px"))
        else:
            self.input = w.Text(
                value=_text(p, p.default), placeholder="model default" if p.default is None else "",
                continuous_update=False, layout=w.Layout(width="420px"), **common,
            )  # fmt: skip
        self.input.tooltip = f"{p.help} (default {p.default})"
        rule = f"; allowed: {p.rule}" if p.rule and p.choices is None else ""
        self.note = w.HTML(
            f"<small style='color:#57606a'>{html.escape(p.help)}{html.escape(rule)}</small>",
            layout=w.Layout(margin="0 0 4px 156px"),
        )
        self.error = w.HTML(layout=w.Layout(margin="0 0 0 8px"))
        super().__init__([w.HBox([self.input, self.error]), self.note])
        self.input.observe(lambda _: self.check(), names="value")

    def read(self) -> Any:
        """The validated value (None for an empty optional field); raises :class:`ConfigError` and shows it."""
        from ad_core.errors import ConfigError

        value = self.input.value
        try:
            out = None if isinstance(value, str) and not value.strip() else self.param.validate(value)
        except ConfigError as exc:
            self.error.value = f"<span style='color:#cf222e'>&#10008; {html.escape(str(exc))}</span>"
            raise
        self.error.value = ""
        return out

    def check(self) -> bool:
        """Validate now (as the person types); True when the value is allowed."""
        from ad_core.errors import ConfigError

        try:
            self.read()
        except ConfigError:
            return False
        return True

    def write(self, value: Any) -> None:
        """Show ``value``."""
        self.input.value = value if isinstance(self.input, w.Dropdown) else _text(self.param, value)

    @property
    def value(self) -> Any:
        """The raw input (tests set it as a person types)."""
        return self.input.value

    @value.setter
    def value(self, v: Any) -> None:
        self.input.value = v if isinstance(self.input, w.Dropdown) else ("" if v is None else str(v))


def _text(p: Param, value: Any) -> str:
    if value is None:
        return ""
    if p.multiple:
        return ", ".join(map(str, value))
    return str(value)


def param_widget(p: Param) -> ParamField:
    """A form field for a registry parameter: default, rule and help text come from the registry."""
    return ParamField(p)


def read_param(p: Param, field: ParamField) -> Any:
    """The value of a form field, validated by the registry (None for an empty optional field)."""
    return field.read()


def write_param(p: Param, field: ParamField, value: Any) -> None:
    """Show ``value`` in a form field."""
    field.write(value)


def show_png(image: w.Image, png: bytes | None) -> None:
    """Show a picture, or hide the widget when there is none (an empty Image draws a broken-image icon)."""
    image.value = png or b""
    image.layout.display = None if png else "none"


def file_link(path: Path, label: str | None = None) -> str:
    """HTML link that opens ``path`` in JupyterLab's file browser when it lies under the server root."""
    import os

    path = Path(path).resolve()
    try:
        rel = path.relative_to(Path(os.getcwd()).resolve())
    except ValueError:
        return f" <code>{html.escape(str(path))}</code>"
    return f" <a href='/lab/tree/{html.escape(rel.as_posix())}' target='_blank'><code>{html.escape(label or str(rel))}</code></a>"
