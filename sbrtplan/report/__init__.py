"""The self-contained HTML plan report.

Depends on ``case``, ``protocols``, ``evaluation`` and matplotlib only.

Public API
----------
render_report(path, *, case, dose, metrics, prescription_gy, n_fractions, title=..., dvh_structures=None,
              qa=None, reference_dose=None, reference_label="clinical") -> Path
set_report_section(path, section_id, fragment) -> Path   (a page added to a written report, e.g. the QA page)
"""

from .html import render_report, set_report_section

__all__ = ["render_report", "set_report_section"]
