"""The self-contained HTML plan report.

Depends on ``case``, ``protocols``, ``evaluation`` and matplotlib only.

Public API
----------
render_report(path, *, case, dose, metrics, prescription_gy, n_fractions, title=..., dvh_structures=None,
              qa=None, reference_dose=None, reference_label="clinical") -> Path
"""

from .html import render_report

__all__ = ["render_report"]
