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
    "Status",
    "card",
    "device_selector",
    "file_link",
    "param_widget",
    "png_bytes",
    "read_param",
    "thumbnail",
    "write_param",
]

LAYOUT_WIDE = w.Layout(width="640px")
STYLE = {"description_width": "150px"}


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


def param_widget(p: Param) -> w.Widget:
    """A form field for a registry parameter: default, range and help text come from the registry."""
    common = {"description": p.name, "style": STYLE, "description_allow_html": False}
    tip = f"{p.help} (default {p.default})"
    if p.choices is not None and not p.multiple:
        widget = w.Dropdown(options=list(p.choices), value=p.default, **common)
    elif p.multiple:
        default = "" if p.default is None else ", ".join(map(str, p.default))
        widget = w.Text(value=default, placeholder="model default" if p.default is None else "", **common)
    elif p.type in (int, float) and p.default is None:  # "as many as there are" (PaDiM's n_features)
        widget = w.Text(value="", placeholder="model default", **common)
    elif p.type is int:
        widget = w.BoundedIntText(
            value=p.default,
            min=int(p.low if p.low is not None else -(2**31)),
            max=int(p.high if p.high is not None else 2**31 - 1),
            **common,
        )
    elif p.type is float:
        widget = w.BoundedFloatText(
            value=p.default,
            min=p.low if p.low is not None else -1e30,
            max=p.high if p.high is not None else 1e30,
            step=None,
            **common,
        )
    else:
        widget = w.Text(value="" if p.default is None else str(p.default), placeholder="none", **common)
    widget.tooltip = tip
    return widget


def read_param(p: Param, widget: w.Widget) -> Any:
    """The value of a form field, validated by the registry (None for an empty optional field)."""
    value = widget.value
    if isinstance(value, str) and not value.strip():
        return None
    return p.validate(value)


def write_param(p: Param, widget: w.Widget, value: Any) -> None:
    """Show ``value`` in a form field."""
    if p.multiple:
        widget.value = "" if value is None else ", ".join(map(str, value))
    elif isinstance(widget, w.Text):
        widget.value = "" if value is None else str(value)
    else:
        widget.value = value


def file_link(path: Path, label: str | None = None) -> str:
    """HTML link that opens ``path`` in JupyterLab's file browser when it lies under the server root."""
    import os

    path = Path(path).resolve()
    try:
        rel = path.relative_to(Path(os.getcwd()).resolve())
    except ValueError:
        return f" <code>{html.escape(str(path))}</code>"
    return f" <a href='/lab/tree/{html.escape(rel.as_posix())}' target='_blank'><code>{html.escape(label or str(rel))}</code></a>"
