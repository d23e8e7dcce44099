"""The run report, ``RUN/report.html`` (:mod:`.html`), and the check that a browser draws it
(:mod:`.browser`)."""

from deepfake_lib.report.html import try_write_report, write_report

__all__ = ["try_write_report", "write_report"]
