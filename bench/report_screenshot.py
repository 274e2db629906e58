"""Render a compress report in headless Chromium and save a screenshot, to look at what users see; and
check its layout there: nothing wider than the window, no two plot labels drawn over each other.

    python bench/report_screenshot.py out/resnet_mnist/report.html report.png

Needs Chromium (Debian: `apt-get install chromium`). Prints the PNG's path and size, and the layout check.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Flags for a closed network: without the background-networking ones Chromium keeps trying to reach Google.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def find_chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


def screenshot(html: Path, png: Path, width: int = 1200, height: int = 2000, timeout: float = 90) -> Path:
    browser = find_chromium()
    if browser is None:
        raise RuntimeError("no Chromium found (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="squeeze-chromium-") as profile:
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={png.resolve()}", html.resolve().as_uri()],
                       check=True, capture_output=True, timeout=timeout)
    if not png.exists() or png.stat().st_size == 0:
        raise RuntimeError(f"Chromium wrote no screenshot for {html}")
    return png


# Runs in the page after layout: what sticks out past the window, and which SVG labels' boxes intersect.
LAYOUT_SCRIPT = """<script>
(function () {
  const width = window.innerWidth, out = {viewport: width, scroll_width: document.documentElement.scrollWidth};
  out.overflowing = Array.from(document.querySelectorAll("body *")).filter(e => e.getBoundingClientRect().right > width + 1
      && !e.closest("svg")).map(e => e.tagName + ": " + (e.textContent || "").trim().slice(0, 40));
  const boxes = Array.from(document.querySelectorAll("svg text")).map(t => [t.textContent, t.getBoundingClientRect()]);
  out.labels = boxes.length;
  out.overlapping_labels = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i][1], b = boxes[j][1];
    if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1)
      out.overlapping_labels.push(boxes[i][0] + " / " + boxes[j][0]);
  }
  const pre = document.createElement("pre");
  pre.id = "squeeze-layout";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


def layout_check(html: Path, width: int = 1000, height: int = 1400, timeout: float = 90) -> dict:
    """Lay the report out in headless Chromium at `width` px and report what a reader would trip over:
    {"viewport", "scroll_width", "overflowing": elements past the right edge, "labels", "overlapping_labels"}."""
    browser = find_chromium()
    if browser is None:
        raise RuntimeError("no Chromium found (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="squeeze-chromium-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html.read_text().replace("</body>", LAYOUT_SCRIPT + "</body>"))
        dom = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile", f"--window-size={width},{height}",
                              "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True, timeout=timeout).stdout
    found = re.search(r'<pre id="squeeze-layout">(.*?)</pre>', dom, re.S)
    if found is None:
        raise RuntimeError(f"Chromium did not run the layout check on {html}")
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args()
    png = screenshot(args.report, args.png, args.width, args.height)
    print(f"{png} ({png.stat().st_size} bytes)")
    print(json.dumps(layout_check(args.report, args.width, args.height), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
