"""What the browser tests share: JupyterLab on a free port, Debian's Chromium through Playwright, locators."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("AD_TEST_ARTIFACTS", Path(__file__).parent / "artifacts")) / "browser"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(sample_root: Path, root: Path):
    """JupyterLab serving ``root`` (with a copy of the sample data in ``root/data``); yields its URL."""
    shutil.copytree(sample_root, root / "data")
    # no "get Jupyter news?" toast over the panels (a person answers it once; a test never does)
    settings = root.parent / f"{root.name}_lab_settings"
    toast = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    toast.parent.mkdir(parents=True, exist_ok=True)
    toast.write_text('{"fetchNews": "false", "checkForUpdates": false}')
    port = free_port()
    log = open(root / "jupyterlab.log", "w")  # noqa: SIM115 - closed after the server stops
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--port={port}",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.root_dir={root}",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            "--allow-root",
            f"--LabApp.user_settings_dir={settings}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        raise RuntimeError(f"JupyterLab did not start: {(root / 'jupyterlab.log').read_text()[-2000:]}")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def field(page, label: str):
    return visible(page, f'.widget-inline-hbox:has(> label:text-is("{label}")) input')


@contextlib.contextmanager
def chromium(viewport=(1280, 800)):
    """A page in headless Debian Chromium (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        try:
            yield page
        finally:
            browser.close()


def visible(page, selector: str):
    return page.locator(f"{selector} >> visible=true").first


def open_and_run(page, url: str, notebook: str, timeout: float = 180_000) -> None:
    """Open ``notebook`` in JupyterLab and run all its cells once its kernel is idle (as a person would)."""
    page.goto(f"{url}/lab/tree/{notebook}", timeout=120_000)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=timeout)
    page.locator("text=/\\| Idle/").first.wait_for(timeout=timeout)  # the status bar: kernel started
    page.locator('.lm-MenuBar-itemLabel:text-is("Run")').click()
    page.locator('.lm-Menu-itemLabel:text-is("Run All Cells")').click()


LAYOUT_CHECK = """() => {
  const out = [...document.querySelectorAll('.jp-OutputArea-output')].filter(e => e.offsetParent !== null);
  const broken = [...document.querySelectorAll('.jp-OutputArea-output img')]
    .filter(i => i.offsetParent !== null && (!i.complete || i.naturalWidth === 0)).map(i => i.outerHTML.slice(0, 120));
  const wide = out.filter(e => e.scrollWidth > e.clientWidth + 1).map(e => `${e.scrollWidth} > ${e.clientWidth}`);
  const cut = [...document.querySelectorAll('.jp-OutputArea-output .widget-label, .jp-OutputArea-output button')]
    .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1).map(e => e.textContent.trim());
  return {broken, wide, cut};
}"""


def layout_problems(page) -> dict:
    """Broken pictures (naturalWidth 0), outputs wider than their box, labels and buttons cut off."""
    return page.evaluate(LAYOUT_CHECK)
