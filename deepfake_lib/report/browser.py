"""Open a page in headless Chromium (Debian's ``chromium``): a screenshot, and which of its
images loaded. The report's test and the README's screenshot both come from here::

    python -m deepfake_lib.report.browser RUN/report.html docs/report.png [--width 1200]

Images are checked without DevTools: a copy of the page, beside it (so that relative links
resolve alike), gets a script that, once the page has loaded, writes each image's state into
an attribute of ``<body>``; Chromium's ``--dump-dom`` prints the DOM after that. The copy is
deleted afterwards.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CHECK = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-broken", JSON.stringify(images
    .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 80))));
});
</script>"""


@dataclass(frozen=True)
class PageCheck:
    images: int            # images in the page
    broken: list[str]      # alt text (or start of the address) of those that did not load


def find_browser() -> str | None:
    """The Chromium executable on PATH, or None."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _chromium(browser: str, *args: str, timeout: float = 120) -> str:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        out = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--no-first-run", "--disable-dev-shm-usage", "--disable-extensions",
             f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{browser} failed ({out.returncode}): {out.stderr[-2000:]}")
    return out.stdout


def check_images(page: str | Path, browser: str) -> PageCheck:
    """Load ``page`` (a local HTML file) and report which of its images loaded."""
    page = Path(page).resolve()
    copy = page.with_name(f".{page.stem}.check-{uuid.uuid4().hex[:8]}.html")
    text = page.read_text()
    copy.write_text(text.replace("</body>", CHECK + "</body>") if "</body>" in text
                    else text + CHECK)
    try:
        dom = _chromium(browser, "--virtual-time-budget=10000", "--dump-dom", copy.as_uri())
    finally:
        copy.unlink()
    body = re.search(r"<body[^>]*>", dom)
    images = re.search(r'data-images="(\d+)"', body.group(0)) if body else None
    broken = re.search(r'data-broken="([^"]*)"', body.group(0)) if body else None
    if images is None or broken is None:
        raise RuntimeError(f"the check script did not run in {page}")
    return PageCheck(int(images.group(1)), json.loads(html.unescape(broken.group(1))))


def screenshot(page: str | Path, png: str | Path, browser: str, width: int = 1200,
               height: int = 1600) -> np.ndarray:
    """Save a ``width`` x ``height`` screenshot of the top of ``page`` to ``png`` and return
    it (RGB)."""
    import cv2  # noqa: PLC0415

    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    _chromium(browser, f"--window-size={width},{height}", "--virtual-time-budget=10000",
              "--run-all-compositor-stages-before-draw",
              f"--screenshot={png}", Path(page).resolve().as_uri())
    image = cv2.imread(str(png), cv2.IMREAD_COLOR)
    if image is None:
        raise RuntimeError(f"{browser} wrote no screenshot to {png}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def small_png(image: np.ndarray, png: str | Path, width: int = 900, colours: int = 128) -> int:
    """Save ``image`` (RGB) at ``width`` px, in ``colours`` palette colours, as a small PNG
    (for a README); returns its size in bytes."""
    from PIL import Image  # noqa: PLC0415

    shown = Image.fromarray(image)
    shown = shown.resize((width, round(image.shape[0] * width / image.shape[1])),
                         Image.Resampling.LANCZOS)
    shown.quantize(colours, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
    return os.path.getsize(png)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("page", help="a local HTML file")
    p.add_argument("png", help="where the screenshot goes (made small, for a README)")
    p.add_argument("--width", type=int, default=1200, help="browser window, px")
    p.add_argument("--height", type=int, default=1600)
    a = p.parse_args(argv)
    browser = find_browser()
    if browser is None:
        print(f"no Chromium on PATH ({', '.join(BROWSERS)}): apt-get install chromium",
              file=sys.stderr)
        return 1
    check = check_images(a.page, browser)
    with tempfile.TemporaryDirectory() as tmp:
        image = screenshot(a.page, Path(tmp) / "shot.png", browser, a.width, a.height)
    size = small_png(image, a.png)
    print(f"{a.page}: {check.images} images, {len(check.broken)} broken; screenshot "
          f"{a.png} ({size / 1024:.0f} KB)")
    return 1 if check.broken else 0


if __name__ == "__main__":
    sys.exit(main())
