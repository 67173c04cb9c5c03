"""Report: one self-contained HTML page and a PNG from a probe results file (no torch here)."""

from .html import Report, default_report_path, render_html, write_report
from .plots import figure_png, layer_figure

__all__ = ["Report", "default_report_path", "figure_png", "layer_figure", "render_html", "write_report"]
