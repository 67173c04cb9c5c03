"""Open a report in headless Chromium at 1280 px and check that nothing overflows horizontally.

Usage:
    python bench/report_width.py REPORT.html [--screenshot x.png] [--width 1280]

Prints the page's scroll width against the window's client width and the
elements whose right edge passes it; exits 1 on overflow. A copy of the report
gets a small script that writes those numbers into the DOM once the page (and
its embedded images) has loaded; Chromium's --dump-dom returns them. The
screenshot is taken from the report itself:

    chromium --headless --no-sandbox --screenshot=x.png --window-size=1280,2000 file:///abs/path/report.html
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

PROBE = """<script>
window.addEventListener("load", () => {
  const limit = document.documentElement.clientWidth;
  const over = [...document.querySelectorAll("body *")]
    .filter(e => e.getBoundingClientRect().right > limit + 0.5)
    .map(e => `${e.tagName.toLowerCase()}${e.className ? "." + e.className : ""} right=${Math.round(e.getBoundingClientRect().right)}`);
  const out = document.createElement("pre");
  out.id = "layerprobe-width";
  out.textContent = JSON.stringify({scrollWidth: document.documentElement.scrollWidth, clientWidth: limit,
                                    innerWidth: window.innerWidth, overflowing: over.slice(0, 10)});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("no chromium on PATH: apt-get install -y chromium")


def _run(args: list[str]) -> str:
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", *args],
                          capture_output=True, text=True, timeout=120).stdout


def measure(report: Path, width: int = 1280, height: int = 2000) -> dict:
    """Scroll width, client width and overflowing elements of ``report`` in a ``width``-px window."""
    page = report.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(page.replace("</body>", PROBE + "</body>"))
        dom = _run([f"--window-size={width},{height}", "--virtual-time-budget=10000", "--dump-dom",
                    probe.resolve().as_uri()])
    found = re.search(r'<pre id="layerprobe-width">(.*?)</pre>', dom, re.S)
    if not found:
        raise SystemExit(f"chromium did not run the width probe on {report}")
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&gt;", ">"))


def screenshot(report: Path, png: Path, width: int = 1280, height: int = 2000) -> Path:
    _run([f"--screenshot={png.resolve()}", f"--window-size={width},{height}", report.resolve().as_uri()])
    return png


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    found = measure(args.report, args.width)
    fits = found["scrollWidth"] <= found["clientWidth"] and not found["overflowing"]
    print(f"{args.report}: window {args.width} px, client width {found['clientWidth']} px, "
          f"scroll width {found['scrollWidth']} px: {'fits' if fits else 'OVERFLOWS'}")
    for element in found["overflowing"]:
        print(f"  overflowing: {element}")
    if args.screenshot:
        print(f"screenshot: {screenshot(args.report, args.screenshot, args.width)}")
    return 0 if fits else 1


if __name__ == "__main__":
    sys.exit(main())
