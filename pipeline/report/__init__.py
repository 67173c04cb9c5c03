"""Report: one self-contained HTML page and a PNG from a probe results file, or one page from a
study across models (no torch here)."""

from .html import Report, default_report_path, render_html, write_report
from .plots import figure_png, layer_figure
from .study import StudyReport, render_study, write_study_report

__all__ = ["Report", "StudyReport", "default_report_path", "figure_png", "layer_figure", "render_html",
           "render_study", "write_report", "write_study_report"]
