"""TBI beam data: the file format, its loader and the interpolation of its tables.

The format (YAML, ``format: 1``) is documented in ``docs/tbi.md``; the shipped example is
``sbrtplan/tbi/data/generic_6mv_tbi.yaml``.  Every table is checked when loaded (units,
ranges, monotonic axes, finiteness); errors name the file and the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from scipy.interpolate import RegularGridInterpolator

from .._fields import number_field
from ..errors import InputError

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_BEAM_DATA = DATA_DIR / "generic_6mv_tbi.yaml"


@dataclass(frozen=True)
class Attenuator:
    """A compensator, block or spoiler material (broad-beam attenuation)."""

    material: str
    mu_per_cm: float
    step_mm: float = 0.0
    max_thickness_mm: float = 0.0
    distance_cm: float = 0.0          # source to the tray / screen
    tolerance_mm: float = 0.0

    def transmission(self, thickness_mm) -> np.ndarray:
        return np.exp(-self.mu_per_cm * np.asarray(thickness_mm, dtype=float) / 10.0)

    def thickness_mm(self, transmission) -> np.ndarray:
        """Thickness giving ``transmission`` (<= 1), before rounding to the step."""
        t = np.clip(np.asarray(transmission, dtype=float), 1e-6, 1.0)
        return -np.log(t) / self.mu_per_cm * 10.0


@dataclass
class TbiBeamData:
    """One treatment unit's TBI data (see ``docs/tbi.md``)."""

    name: str
    modality: str
    energy_mv: float
    sad_cm: float
    max_field_at_sad_cm: float
    collimator_deg: float
    dose_rates_mu_per_min: tuple[float, ...]
    output_cgy_per_mu: float
    reference_distance_cm: float
    reference_square_cm: float
    dmax_cm: float
    tmr_depths_cm: np.ndarray
    tmr_squares_cm: np.ndarray
    tmr_values: np.ndarray
    sp_squares_cm: np.ndarray
    sp_values: np.ndarray
    oar_distance_cm: np.ndarray
    oar_ratio: np.ndarray
    spoiler: Attenuator
    spoiler_calibrated_cm: float
    compensator: Attenuator
    block: Attenuator
    source: str = ""

    def __post_init__(self) -> None:
        self._tmr = RegularGridInterpolator((self.tmr_squares_cm, self.tmr_depths_cm), self.tmr_values,
                                            bounds_error=False, fill_value=None)

    # ---------------------------------------------------------------- tables
    def tmr(self, depth_cm, square_cm) -> np.ndarray:
        """TMR at water-equivalent ``depth_cm`` for equivalent square ``square_cm``.

        Bilinear in the table; depths and squares are clamped to the measured range (no
        extrapolation of measured data: a depth beyond the table is a planning error caught
        by :func:`check_depths`).
        """
        d = np.clip(np.asarray(depth_cm, dtype=float), self.tmr_depths_cm[0], self.tmr_depths_cm[-1])
        s = np.clip(np.asarray(square_cm, dtype=float), self.tmr_squares_cm[0], self.tmr_squares_cm[-1])
        d, s = np.broadcast_arrays(d, s)
        return self._tmr(np.stack([s.ravel(), d.ravel()], axis=1)).reshape(d.shape)

    def sp(self, square_cm) -> np.ndarray:
        """Phantom scatter factor relative to the reference square."""
        return np.interp(np.asarray(square_cm, dtype=float), self.sp_squares_cm, self.sp_values)

    def oar(self, off_axis_cm) -> np.ndarray:
        """Off-axis ratio in the treatment plane; 0 beyond the last tabulated distance."""
        r = np.abs(np.asarray(off_axis_cm, dtype=float))
        return np.interp(r, self.oar_distance_cm, self.oar_ratio, right=0.0)

    def spoiler_factor(self, spoiler_cm: float) -> float:
        """Transmission of a spoiler of ``spoiler_cm`` relative to the calibrated one."""
        return float(math.exp(-self.spoiler.mu_per_cm * (spoiler_cm - self.spoiler_calibrated_cm)))

    @property
    def max_depth_cm(self) -> float:
        return float(self.tmr_depths_cm[-1])


# ------------------------------------------------------------------- loading
def _num(d: dict, key: str, where: str, lo: float, hi: float) -> float:
    return number_field(d, key, f"TBI beam data {where}.{key}", lo, hi)   # the dotted path names the field


def _arr(d: dict, key: str, where: str, lo: float, hi: float, increasing: bool = False, ndim: int = 1) -> np.ndarray:
    if key not in d:
        raise InputError(f"TBI beam data {where}: missing '{key}'")
    try:
        a = np.asarray(d[key], dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"TBI beam data {where}.{key}: expected a numeric table") from None
    if a.ndim != ndim or a.size == 0:
        raise InputError(f"TBI beam data {where}.{key}: expected a {ndim}-D table, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or a.min() < lo or a.max() > hi:
        raise InputError(f"TBI beam data {where}.{key}: values must be finite within [{lo:g}, {hi:g}]")
    if increasing and (a.size < 2 or np.any(np.diff(a) <= 0)):
        raise InputError(f"TBI beam data {where}.{key}: expected at least two strictly increasing values")
    return a


def _section(doc: dict, key: str, where: str) -> dict:
    sec = doc.get(key)
    if not isinstance(sec, dict):
        raise InputError(f"TBI beam data {where}: missing section '{key}'")
    return sec


def load_beam_data(path=None) -> TbiBeamData:
    """Read and validate a TBI beam-data file (default: the shipped generic 6 MV example).

    Raises
    ------
    InputError
        Naming the file and key for a missing, out-of-range or inconsistent value.
    """
    p = Path(path) if path is not None else DEFAULT_BEAM_DATA
    if not p.is_file():
        raise InputError(f"TBI beam data '{p}': file not found")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"TBI beam data '{p}': not valid YAML ({str(e).splitlines()[0]})") from None
    w = f"'{p.name}'"
    if not isinstance(doc, dict) or doc.get("format") != 1:
        raise InputError(f"TBI beam data {w}: expected 'format: 1'")
    modality = str(doc.get("modality", "photon")).lower()
    if modality not in ("photon", "cobalt"):
        raise InputError(f"TBI beam data {w}.modality: expected 'photon' or 'cobalt', got {modality!r}")
    m = _section(doc, "machine", w)
    c = _section(doc, "calibration", w)
    t = _section(doc, "tmr", w)
    s = _section(doc, "phantom_scatter", w)
    o = _section(doc, "off_axis", w)
    sp = _section(doc, "spoiler", w)
    cp = _section(doc, "compensator", w)
    bl = _section(doc, "block", w)
    depths = _arr(t, "depths_cm", f"{w}.tmr", 0.0, 60.0, increasing=True)
    squares = _arr(t, "squares_cm", f"{w}.tmr", 1.0, 300.0, increasing=True)
    values = _arr(t, "values", f"{w}.tmr", 0.0, 1.2, ndim=2)
    if values.shape != (squares.size, depths.size):
        raise InputError(f"TBI beam data {w}.tmr.values: shape {values.shape}, expected "
                         f"({squares.size} squares, {depths.size} depths)")
    dmax = _num(c, "dmax_cm", f"{w}.calibration", 0.0, 5.0)
    at_dmax = np.array([np.interp(dmax, depths, row) for row in values])
    if np.any(np.abs(at_dmax - 1.0) > 0.01):
        raise InputError(f"TBI beam data {w}.tmr: TMR must be 1 at d_max = {dmax:g} cm (within 1 %), got "
                         f"{', '.join(f'{v:.3f}' for v in at_dmax)}")
    beyond = depths > dmax + 1.0
    if np.any(np.diff(values[:, beyond], axis=1) >= 0):
        raise InputError(f"TBI beam data {w}.tmr: TMR must decrease with depth beyond d_max + 1 cm")
    sp_sq = _arr(s, "squares_cm", f"{w}.phantom_scatter", 1.0, 300.0, increasing=True)
    sp_v = _arr(s, "sp", f"{w}.phantom_scatter", 0.5, 1.5)
    if sp_v.size != sp_sq.size:
        raise InputError(f"TBI beam data {w}.phantom_scatter: 'sp' and 'squares_cm' differ in length")
    oar_d = _arr(o, "distance_cm", f"{w}.off_axis", 0.0, 400.0, increasing=True)
    oar_r = _arr(o, "ratio", f"{w}.off_axis", 0.0, 1.5)
    if oar_r.size != oar_d.size or oar_d[0] != 0.0 or abs(oar_r[0] - 1.0) > 1e-6:
        raise InputError(f"TBI beam data {w}.off_axis: expected matching lists starting at distance 0, ratio 1")
    rates = _arr(m, "dose_rates_mu_per_min", f"{w}.machine", 1.0, 5000.0, increasing=True)

    def att(sec: dict, name: str, dist_key: str | None, tol: bool = False) -> Attenuator:
        where = f"{w}.{name}"
        return Attenuator(material=str(sec.get("material", name)),
                          mu_per_cm=_num(sec, "mu_per_cm", where, 1e-4, 5.0),
                          step_mm=_num(sec, "step_mm", where, 0.01, 20.0) if "step_mm" in sec else 0.0,
                          max_thickness_mm=_num(sec, "max_thickness_mm", where, 0.0, 300.0)
                          if "max_thickness_mm" in sec else 0.0,
                          distance_cm=_num(sec, dist_key, where, 10.0, 2000.0) if dist_key else 0.0,
                          tolerance_mm=_num(sec, "thickness_tolerance_mm", where, 0.0, 10.0) if tol else 0.0)

    return TbiBeamData(
        name=str(doc.get("name", p.stem)), modality=modality,
        energy_mv=_num(doc, "energy_mv", w, 1.0, 25.0),
        sad_cm=_num(m, "sad_cm", f"{w}.machine", 50.0, 150.0),
        max_field_at_sad_cm=_num(m, "max_field_at_sad_cm", f"{w}.machine", 10.0, 60.0),
        collimator_deg=_num(m, "collimator_deg", f"{w}.machine", 0.0, 90.0),
        dose_rates_mu_per_min=tuple(float(r) for r in rates),
        output_cgy_per_mu=_num(c, "output_cgy_per_mu", f"{w}.calibration", 1e-4, 2.0),
        reference_distance_cm=_num(c, "reference_distance_cm", f"{w}.calibration", 50.0, 1000.0),
        reference_square_cm=_num(c, "reference_square_cm", f"{w}.calibration", 1.0, 300.0),
        dmax_cm=dmax, tmr_depths_cm=depths, tmr_squares_cm=squares, tmr_values=values,
        sp_squares_cm=sp_sq, sp_values=sp_v, oar_distance_cm=oar_d, oar_ratio=oar_r,
        spoiler=att(sp, "spoiler", None), spoiler_calibrated_cm=_num(sp, "calibrated_thickness_cm", f"{w}.spoiler", 0.0, 10.0),
        compensator=att(cp, "compensator", "tray_distance_cm"),
        block=att(bl, "block", "plane_distance_cm", tol=True),
        source=str(p))
