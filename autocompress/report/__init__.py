"""Plots and the HTML report of a run."""

from autocompress.report.build import PLOTS, build_report

__all__ = ["PLOTS", "build_report"]
