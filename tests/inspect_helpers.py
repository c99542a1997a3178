"""Helpers for the inspector tests: real runs mined through the CLI, a headless chromium (selenium with
the system chromedriver), and a PNG decoder to tell a blank screenshot from a drawn one."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from typer.testing import CliRunner

from hardneg.cli import app

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def mine(dataset: Path, out: Path, cache_dir: Path, flt: str, teacher: str = "bm25", n: int = 4) -> Path:
    res = CliRunner().invoke(app, ["mine", "--dataset", str(dataset), "--teacher", teacher, "--filter", flt,
                                   "--num-negatives", str(n), "--out", str(out), "--cache-dir", str(cache_dir),
                                   "--quiet"])
    assert res.exit_code == 0, res.output
    return out


def browser() -> tuple[Any, str]:
    """(a headless chromium WebDriver, "") or (None, why there is none)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "selenium is not installed (pip install -e '.[test]')"
    binary = next((shutil.which(b) for b in CHROMIUM if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        return None, "no chromium/chromedriver on PATH (apt-get install -y chromium chromium-driver)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1400,1000", "--allow-file-access-from-files"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    from selenium.common.exceptions import WebDriverException

    try:
        return webdriver.Chrome(service=Service(driver), options=opts), ""
    except WebDriverException as exc:  # a browser that does not start is a reason to skip, named
        return None, f"headless chromium did not start: {str(exc).splitlines()[0]}"


def screenshot(driver: Any, scale: float = 0.25) -> bytes:
    """A PNG of the whole window, scaled down (decoding it in Python stays cheap)."""
    size = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "clip": {
        "x": 0, "y": 0, "width": size[0], "height": size[1], "scale": scale}})
    import base64

    return base64.b64decode(shot["data"])


def console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def png_pixels(png: bytes) -> np.ndarray:
    """An 8-bit RGB or RGBA PNG (what chromium's screenshots are) as a (h, w, channels) array."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    w = h = channels = 0
    while pos < len(png):
        n, kind = struct.unpack(">I4s", png[pos:pos + 8])
        chunk = png[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + w * channels)
    out = np.zeros((h, w * channels), dtype=np.int32)
    prev = np.zeros(w * channels, dtype=np.int32)
    for y in range(h):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if f == 0:
            cur = line
        elif f == 2:
            cur = (line + prev) % 256
        else:  # sub, average, paeth need the pixel to the left: byte by byte
            cur = np.zeros_like(line)
            for x in range(line.size):
                a = cur[x - channels] if x >= channels else 0
                b, c = prev[x], (prev[x - channels] if x >= channels else 0)
                if f == 1:
                    pred = a
                elif f == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[x] = (line[x] + pred) % 256
        out[y], prev = cur, cur
    return out.reshape(h, w, channels).astype(np.uint8)
