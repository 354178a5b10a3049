"""TG-43U1 source data: a documented JSON format, shipped consensus datasets, validation.

A source file (``format: sbrtplan-tg43-source/1``, see ``docs/brachy.md``) holds the dose-rate
constant Lambda (cGy h^-1 U^-1), the active length L (cm) of the line-source geometry function,
the radial dose function g_L(r), the 2D anisotropy function F(r, theta) on 0-90 deg, optionally
the 1D anisotropy function phi_an(r) (derived from F when absent), the isotope and half-life,
and the citation of the data.  Every table is checked when it is read: a missing or malformed
table is an :class:`~sbrtplan.errors.InputError` naming the file and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .._fields import number_field
from ..errors import InputError

FORMAT = "sbrtplan-tg43-source/1"

#: Half-lives (days) of TG-43U1 (Rivard et al. 2004, section IV): a source file must agree with them.
HALF_LIFE_DAYS = {"I-125": 59.4, "Pd-103": 17.0, "Cs-131": 9.7}

_SHIPPED = {"6711": "source_oncoseed_6711.json", "2301": "source_best_2301.json", "200": "source_theragenics_200.json"}


@dataclass(frozen=True)
class SourceData:
    """One seed model's TG-43U1 dataset (units in the names; r in cm as in the report)."""

    model: str
    name: str
    vendor: str
    isotope: str
    half_life_days: float
    active_length_cm: float
    dose_rate_constant: float  # Lambda, cGy h^-1 U^-1
    g_r_cm: np.ndarray
    g_l: np.ndarray
    f_r_cm: np.ndarray
    f_theta_deg: np.ndarray
    f_table: np.ndarray  # (len(f_r_cm), len(f_theta_deg))
    phi_r_cm: np.ndarray
    phi_an: np.ndarray
    phi_an_derived: bool
    seed_length_mm: float
    seed_diameter_mm: float
    citation: str
    path: str

    @property
    def mean_life_h(self) -> float:
        """tau = T_1/2 / ln 2 in hours: a permanent implant delivers D = D_rate(0) * tau."""
        return self.half_life_days * 24.0 / math.log(2.0)

    def total_dose_gy_per_cgy_h(self) -> float:
        """Total dose of a permanent implant (Gy) per initial dose rate of 1 cGy/h."""
        return self.mean_life_h / 100.0


def list_sources() -> dict[str, str]:
    """Shipped models -> file name."""
    return dict(_SHIPPED)


def _table(obj: dict, key: str, where: str) -> dict:
    if key not in obj or not isinstance(obj[key], dict):
        raise InputError(f"source file '{where}': missing table '{key}' (see docs/brachy.md for the format)")
    return obj[key]


def _vector(tab: dict, key: str, where: str, positive: bool = True) -> np.ndarray:
    if key not in tab:
        raise InputError(f"source file '{where}': missing column '{key}'")
    try:
        v = np.asarray(tab[key], dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"source file '{where}': '{key}' must be a list of numbers") from None
    if v.ndim != 1 or v.size < 2 or not np.all(np.isfinite(v)):
        raise InputError(f"source file '{where}': '{key}' must be a list of at least 2 finite numbers, got {tab[key]!r}")
    if positive and np.any(v <= 0):
        raise InputError(f"source file '{where}': '{key}' must be > 0 everywhere (got min {v.min():g})")
    return v


def _increasing(v: np.ndarray, key: str, where: str) -> None:
    if np.any(np.diff(v) <= 0):
        raise InputError(f"source file '{where}': '{key}' must be strictly increasing")


def _number(obj: dict, key: str, where: str, lo: float = 0.0, hi: float = math.inf) -> float:
    return number_field(obj, key, f"source file '{where}'", lo, hi, open_interval=True)


def derive_phi_an(f_r_cm: np.ndarray, f_theta_deg: np.ndarray, f_table: np.ndarray, active_length_cm: float,
                  n_theta: int = 1801) -> np.ndarray:
    """phi_an(r) from F(r, theta): the solid-angle weighted mean dose rate at r over the dose rate
    on the transverse axis (TG-43U1 eq. 10), i.e. 1/2 int_0^pi F(r,th) G_L(r,th)/G_L(r,90) sin th dth."""
    th = np.linspace(0.0, 90.0, n_theta)
    th_rad = np.radians(th)
    out = np.empty(len(f_r_cm))
    for i, r in enumerate(f_r_cm):
        f = np.interp(th, f_theta_deg, f_table[i])
        g = geometry_line(np.full_like(th_rad, r), th_rad, active_length_cm)
        g90 = geometry_line(np.array([r]), np.array([math.pi / 2]), active_length_cm)[0]
        # symmetric about 90 deg: the integral over 0..pi is twice that over 0..pi/2, and 1/2 * 2 = 1
        out[i] = np.trapezoid(f * g / g90 * np.sin(th_rad), th_rad) if hasattr(np, "trapezoid") else \
            np.trapz(f * g / g90 * np.sin(th_rad), th_rad)
    return out


def geometry_line(r_cm: np.ndarray, theta_rad: np.ndarray, length_cm: float) -> np.ndarray:
    """Line-source geometry function G_L(r, theta) = beta / (L r sin theta) (1/(r^2 - L^2/4) on the axis)."""
    r = np.asarray(r_cm, float)
    th = np.asarray(theta_rad, float)
    y = np.abs(r * np.sin(th))
    L = float(length_cm)
    beta = np.arctan2(L * y, r * r - 0.25 * L * L)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(y > 1e-9 * np.maximum(r, 1e-12), beta / (L * y), 1.0 / (r * r - 0.25 * L * L))
    return g


def load_source(spec: str | Path) -> SourceData:
    """A shipped model (``6711``, ``2301``, ``200``) or a JSON source file.

    Raises
    ------
    InputError
        Unknown model, unreadable file, wrong format, missing or malformed table.
    """
    key = str(spec).strip()
    if key.lower().removeprefix("model").strip() in _SHIPPED:
        fname = _SHIPPED[key.lower().removeprefix("model").strip()]
        text = resources.files("sbrtplan.brachy").joinpath("data", fname).read_text()
        where = f"sbrtplan/brachy/data/{fname}"
    else:
        p = Path(key)
        if not p.is_file():
            raise InputError(f"seed source '{spec}': neither a shipped model ({', '.join(_SHIPPED)}) nor a file")
        text = p.read_text()
        where = str(p)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"source file '{where}': not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise InputError(f"source file '{where}': 'format' must be '{FORMAT}'")
    isotope = str(obj.get("isotope", ""))
    if isotope not in HALF_LIFE_DAYS:
        raise InputError(f"source file '{where}': isotope must be one of {', '.join(HALF_LIFE_DAYS)}, got {isotope!r}")
    half_life = _number(obj, "half_life_days", where, 0.0, 1e4)
    if abs(half_life - HALF_LIFE_DAYS[isotope]) > 0.05 * HALF_LIFE_DAYS[isotope]:
        raise InputError(f"source file '{where}': half_life_days {half_life:g} is not that of {isotope} "
                         f"({HALF_LIFE_DAYS[isotope]:g} d)")
    lam = _number(obj, "dose_rate_constant_cgy_per_h_per_u", where, 0.0, 5.0)
    length = _number(obj, "active_length_cm", where, 0.0, 1.0)
    g = _table(obj, "radial_dose_function", where)
    g_r, g_v = _vector(g, "r_cm", where), _vector(g, "g_l", where)
    if g_r.size != g_v.size:
        raise InputError(f"source file '{where}': radial_dose_function has {g_r.size} radii but {g_v.size} values")
    _increasing(g_r, "radial_dose_function.r_cm", where)
    if not np.any(np.isclose(g_r, 1.0)) or abs(float(np.interp(1.0, g_r, g_v)) - 1.0) > 1e-3:
        raise InputError(f"source file '{where}': g_L must be tabulated at the reference distance r0 = 1 cm "
                         f"with g_L(1 cm) = 1")
    f = _table(obj, "anisotropy_function", where)
    f_r, f_t = _vector(f, "r_cm", where), _vector(f, "theta_deg", where, positive=False)
    _increasing(f_r, "anisotropy_function.r_cm", where)
    _increasing(f_t, "anisotropy_function.theta_deg", where)
    if f_t[0] < 0 or abs(f_t[-1] - 90.0) > 1e-9:
        raise InputError(f"source file '{where}': anisotropy_function.theta_deg must run from >= 0 to 90 deg")
    try:
        f_tab = np.asarray(f.get("f"), dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"source file '{where}': anisotropy_function.f must be a table of numbers") from None
    if f_tab.shape != (f_r.size, f_t.size) or not np.all(np.isfinite(f_tab)) or np.any(f_tab <= 0):
        raise InputError(f"source file '{where}': anisotropy_function.f must be {f_r.size} rows x {f_t.size} "
                         f"positive values, got shape {f_tab.shape}")
    if np.any(np.abs(f_tab[:, -1] - 1.0) > 1e-3):
        raise InputError(f"source file '{where}': F(r, 90 deg) must be 1 (TG-43U1 normalisation)")
    derived = "anisotropy_factor" not in obj
    if derived:
        phi_r, phi = f_r.copy(), derive_phi_an(f_r, f_t, f_tab, length)
    else:
        a = _table(obj, "anisotropy_factor", where)
        phi_r, phi = _vector(a, "r_cm", where), _vector(a, "phi_an", where)
        if phi_r.size != phi.size:
            raise InputError(f"source file '{where}': anisotropy_factor has {phi_r.size} radii but {phi.size} values")
        _increasing(phi_r, "anisotropy_factor.r_cm", where)
    citation = str(obj.get("citation", "")).strip()
    if not citation:
        raise InputError(f"source file '{where}': 'citation' (the source of the data) is required")
    return SourceData(model=str(obj.get("model", key)), name=str(obj.get("name", key)),
                      vendor=str(obj.get("vendor", "")), isotope=isotope, half_life_days=half_life,
                      active_length_cm=length, dose_rate_constant=lam, g_r_cm=g_r, g_l=g_v, f_r_cm=f_r,
                      f_theta_deg=f_t, f_table=f_tab, phi_r_cm=phi_r, phi_an=phi, phi_an_derived=derived,
                      seed_length_mm=float(obj.get("seed_length_mm", 4.5)),
                      seed_diameter_mm=float(obj.get("seed_diameter_mm", 0.8)), citation=citation, path=where)
