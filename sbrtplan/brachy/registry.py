"""Seed traceability (standard 004: purchase, storage, use and return of every seed) and the cohort summary.

A :class:`SeedRegistry` is the record of one case's seed batch: model, vendor, lot, air-kerma strength
and its calibration date, the numbers ordered, implanted, returned and lost.  Every ordered seed must be
accounted for; the difference is reported as unaccounted.  :func:`cohort_summary` reads the
``metrics.json`` of many cases and reports the post-implant verification rate (the standard requires
more than 80 %) and every case with unaccounted seeds.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InputError

#: The standard's minimum share of implants with post-implant dosimetric verification (strictly more).
REQUIRED_VERIFICATION_RATE = 0.80


@dataclass(frozen=True)
class SeedRegistry:
    model: str
    vendor: str
    lot: str
    isotope: str
    strength_u: float
    calibration_date: str   # YYYY-MM-DD, the vendor's air-kerma strength calibration
    n_ordered: int
    n_implanted: int = 0
    n_returned: int = 0
    n_lost: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.strength_u, (int, float)) and math.isfinite(self.strength_u) and self.strength_u > 0):
            raise InputError(f"seed registry: air-kerma strength must be > 0 U, got {self.strength_u!r}")
        for k in ("n_ordered", "n_implanted", "n_returned", "n_lost"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise InputError(f"seed registry: {k} must be a whole number >= 0, got {v!r}")
        try:
            _dt.date.fromisoformat(str(self.calibration_date))
        except ValueError:
            raise InputError(f"seed registry: calibration_date must be YYYY-MM-DD, got {self.calibration_date!r}") \
                from None
        if not str(self.lot).strip():
            raise InputError("seed registry: the lot number is required (traceability)")
        if self.n_implanted + self.n_returned + self.n_lost > self.n_ordered:
            raise InputError(f"seed registry: implanted + returned + lost ({self.n_implanted} + {self.n_returned} + "
                             f"{self.n_lost}) exceeds the {self.n_ordered} seeds ordered")

    @property
    def n_unaccounted(self) -> int:
        """Seeds ordered but neither implanted, returned nor reported lost (in storage or missing)."""
        return self.n_ordered - self.n_implanted - self.n_returned - self.n_lost

    def strength_at(self, date: str) -> float:
        """Air-kerma strength (U) on ``date`` after decay from the calibration date."""
        from .source import HALF_LIFE_DAYS

        days = (_dt.date.fromisoformat(date) - _dt.date.fromisoformat(self.calibration_date)).days
        return self.strength_u * 0.5 ** (days / HALF_LIFE_DAYS[self.isotope])

    def as_dict(self) -> dict:
        return {**asdict(self), "n_unaccounted": self.n_unaccounted}

    @classmethod
    def from_dict(cls, obj: dict, where: str = "seed registry") -> "SeedRegistry":
        try:
            return cls(model=str(obj["model"]), vendor=str(obj.get("vendor", "")), lot=str(obj["lot"]),
                       isotope=str(obj["isotope"]), strength_u=float(obj["strength_u"]),
                       calibration_date=str(obj["calibration_date"]), n_ordered=int(obj["n_ordered"]),
                       n_implanted=int(obj.get("n_implanted", 0)), n_returned=int(obj.get("n_returned", 0)),
                       n_lost=int(obj.get("n_lost", 0)))
        except KeyError as e:
            raise InputError(f"{where}: missing field {e}") from None
        except (TypeError, ValueError) as e:
            raise InputError(f"{where}: bad value ({e})") from None

    @classmethod
    def read(cls, path: str | Path) -> "SeedRegistry":
        p = Path(path)
        try:
            obj = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"seed registry '{path}': not a readable JSON file ({e})") from None
        return cls.from_dict(obj, f"seed registry '{path}'")


def cohort_summary(metrics_files: list[str | Path]) -> dict:
    """Verification rate and seed accounting over the ``metrics.json`` of the cases of a cohort.

    A case counts as verified when its metrics hold a post-implant verification (``kind`` =
    ``seed-verify``, or a pre-plan whose ``post_implant_verified`` is true).
    """
    cases = {}
    for f in metrics_files:
        try:
            m = json.loads(Path(f).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"cohort: '{f}' is not a readable metrics.json ({e})") from None
        cid = str(m.get("case", Path(f).parent.name))
        entry = cases.setdefault(cid, {"verified": False, "unaccounted": 0, "lots": set()})
        if m.get("kind") == "seed-verify" or m.get("post_implant_verified"):
            entry["verified"] = True
        reg = m.get("registry") or {}
        if reg:
            entry["unaccounted"] = max(entry["unaccounted"], int(reg.get("n_unaccounted", 0)))
            entry["lots"].add(str(reg.get("lot", "")))
    n = len(cases)
    verified = sum(1 for c in cases.values() if c["verified"])
    rate = verified / n if n else 0.0
    return {"n_cases": n, "n_verified": verified, "verification_rate": rate,
            "required_rate": REQUIRED_VERIFICATION_RATE, "rate_met": rate > REQUIRED_VERIFICATION_RATE,
            "cases_not_verified": sorted(k for k, c in cases.items() if not c["verified"]),
            "unaccounted_seeds": {k: c["unaccounted"] for k, c in sorted(cases.items()) if c["unaccounted"]}}
