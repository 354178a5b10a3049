"""Cumulative dose-volume histograms with sub-voxel occupancy.

Convention
----------
A DVH is built from *samples* (dose, volume): each voxel of the structure
contributes its occupancy times the voxel volume.  Sorted by decreasing dose
``d_1 >= d_2 >= ...`` with cumulative volumes ``C_k = v_1 + ... + v_k``, the
cumulative DVH is the piecewise-linear curve through the points ``(d_k, C_k)``:

* ``V(t)`` (volume receiving at least ``t``) is ``C_k`` at ``t = d_k`` and linear
  in between; ``V(t) = 0`` above the maximum.
* ``D_x`` (minimum dose to the hottest ``x`` cc) is its inverse: the dose at which
  the cumulative volume reaches ``x``, interpolated linearly within the sample
  (voxel) that completes ``x``; ``D_x`` below the first sample's volume is the
  maximum.

``V`` and ``D`` are exact inverses of each other, so "D0.5cc < 24 Gy" and
"V24Gy < 0.5 cc" agree.  The mean is the occupancy-weighted mean of the
voxel-centre doses (a histogram of voxel values, as dicompyler-core computes it
with 1 cGy bins).

Two sample sets
---------------
Sub-voxel samples (``s^3`` per voxel: trilinear dose, planar boundary model; see
``_kernels.subsample_voxels``) are used where voxel centres are not enough:

* the **body** set answers coverage, D95/D98, V_x and large-volume metrics: voxel
  centres, except that partially occupied boundary voxels (0 < f < 1) of targets
  and small structures are sub-sampled, so that the part of a boundary voxel that
  is inside the structure gets the dose of that part.  Fully occupied voxels keep
  their centre value (the dose-grid convention of clinical systems), so a dose
  step at the edge of a binary structure is not smeared.
* the **tail** set answers Dmax and D_x for ``x <= tail_cc`` (D0.035cc on a 2 mm
  grid is 4.4 voxels): every voxel that can hold the hottest ``tail_cc`` is
  sub-sampled.  With ``l_v``, ``u_v`` the minimum and maximum dose over a voxel's
  3x3x3 neighbourhood (bounds of its trilinear sub-samples) and ``L`` the
  ``tail_cc`` dose of the ``l_v`` distribution, the sub-sampled voxels are those
  with ``u_v >= L``; no other voxel has a sub-sample at or above ``L``, so the
  tail is exact (to the sub-sampling) above ``L``, which covers ``tail_cc``.
  ``tail_cc`` is at most half the structure volume.

No dose outside the structure
----------------------------
A hot-tail sample must be a dose the structure receives: the boundary model may
not place it outside the contour where a steep gradient makes it hotter than any
point inside (a planar cut through a curved boundary does, by up to 0.35 mm on
2.5 mm voxels).  Three rules keep the samples inside: sub-voxels are ranked for
inclusion by the trilinearly interpolated occupancy (its 1/2 level follows a
curved boundary better than one plane), a sub-voxel cut by the boundary takes the
dose at the centroid of its inner part, and the tail samples of partial voxels
are taken ``TAIL_INSET`` sub-voxel extents further inside along the normal.  On
spheres of 6-13 mm radius against ramps of 6-8 Gy/mm the reported maximum is then
never above the maximum interpolated inside (``tests/test_evaluation_dmax.py``;
before, up to 8 % above), and at most 0.4 mm times the gradient below it.

``Refinement.NONE`` uses voxel centres only; ``TAIL`` refines only the tail
(large organs); ``FULL`` also the boundary voxels; ``AUTO`` = ``FULL`` for
targets and structures of at most ``FULL_REFINE_MAX_VOXELS`` voxels, else ``TAIL``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..case import Dose, Grid, Structure
from ..errors import InputError, StructureError
from ._kernels import subsample_voxels

#: Largest number of sub-samples one structure may produce (memory and time bound).
MAX_SUBSAMPLES = 3_000_000
#: Structures with at most this many voxels are refined entirely.
FULL_REFINE_MAX_VOXELS = 40_000
#: Inset of the tail samples of partial voxels, in sub-voxel extents along the boundary normal (see
#: "No dose outside the structure" in the module docstring).
TAIL_INSET = 0.1
#: Volume whose DVH is refined in TAIL mode (covers D0.035cc ... D2cc and Dmax).
DEFAULT_TAIL_CC = 2.0


class Refinement(str, enum.Enum):
    AUTO = "auto"
    FULL = "full"
    TAIL = "tail"
    NONE = "none"


class DoseField:
    """A dose array on its grid with the neighbourhood bounds shared by all structures.

    Parameters
    ----------
    dose_gy : ndarray (nz, ny, nx)
    grid : Grid
    """

    def __init__(self, dose_gy: np.ndarray, grid: Grid) -> None:
        d = np.ascontiguousarray(dose_gy, dtype=np.float32)
        if d.shape != grid.shape:
            raise InputError(f"dose array shape {d.shape} does not match its grid {grid.shape}")
        if not np.all(np.isfinite(d)):
            raise InputError("dose array contains NaN or infinite values")
        self.dose = d
        self.grid = grid
        self._lo: np.ndarray | None = None
        self._hi: np.ndarray | None = None

    @classmethod
    def of(cls, dose) -> "DoseField":
        if isinstance(dose, DoseField):
            return dose
        if isinstance(dose, Dose):
            return cls(dose.dose_gy, dose.grid)
        raise InputError(f"expected a Dose or DoseField, got {type(dose).__name__}")

    @property
    def local_min(self) -> np.ndarray:
        """Minimum over each voxel's 3x3x3 neighbourhood (lower bound of its sub-voxel doses)."""
        if self._lo is None:
            self._lo = ndimage.minimum_filter(self.dose, size=3, mode="nearest")
        return self._lo

    @property
    def local_max(self) -> np.ndarray:
        if self._hi is None:
            self._hi = ndimage.maximum_filter(self.dose, size=3, mode="nearest")
        return self._hi

    @property
    def spacing_zyx(self) -> np.ndarray:
        return np.asarray(self.grid.spacing_zyx_mm, dtype=np.float64)


def _samples_for(field_: DoseField, weights: np.ndarray, flat: np.ndarray, s: int,
                 occ_full: np.ndarray | None, inset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Sub-voxel (dose, occupancy-fraction) samples of the voxels ``flat``."""
    kk, jj, ii = np.unravel_index(flat, field_.grid.shape)
    has_occ = occ_full is not None
    occ = occ_full if has_occ else np.ones((1, 1, 1), np.float32)
    sd, sw = subsample_voxels(field_.dose, occ, has_occ, kk.astype(np.int64), jj.astype(np.int64),
                              ii.astype(np.int64), field_.spacing_zyx, int(s), float(inset))
    if not has_occ:
        sw *= weights[:, None]  # mask-only structures: each voxel is fully in (weight 1)
    return sd.ravel(), sw.ravel()


def _subdivisions(n_voxels: int, budget: int = MAX_SUBSAMPLES) -> int:
    for s in (4, 3, 2):
        if n_voxels * s ** 3 <= budget:
            return s
    return 1


@dataclass
class _Sorted:
    dose: np.ndarray      # descending, float64
    cum_cc: np.ndarray    # cumulative volume, float64

    @classmethod
    def build(cls, dose: np.ndarray, vol_cc: np.ndarray) -> "_Sorted":
        keep = vol_cc > 0
        dose = dose[keep]
        vol_cc = vol_cc[keep]
        order = np.argsort(-dose, kind="stable")
        return cls(dose[order].astype(np.float64), np.cumsum(vol_cc[order], dtype=np.float64))

    @classmethod
    def build_top(cls, dose: np.ndarray, vol_cc: np.ndarray, need_cc: float) -> "_Sorted":
        """The hottest samples holding at least ``need_cc`` (all samples above the dose that completes it).

        Only those are sorted (a partial selection first): a tail set on a dose
        plateau can hold a million sub-samples of which a few thousand matter.
        """
        keep = vol_cc > 0
        dose = dose[keep]
        vol_cc = vol_cc[keep]
        n = dose.size
        if n <= 8192 or float(vol_cc.sum()) <= need_cc:
            return cls.build(dose, vol_cc)
        k = min(n, 2 * int(np.ceil(need_cc / float(vol_cc.mean()))) + 64)
        while True:
            part = np.argpartition(-dose, k - 1)[:k] if k < n else np.arange(n)
            if k >= n or float(vol_cc[part].sum()) >= need_cc:
                break
            k = min(n, 4 * k)
        return cls.build(dose[part], vol_cc[part])

    @property
    def total_cc(self) -> float:
        return float(self.cum_cc[-1]) if self.cum_cc.size else 0.0

    def volume_at(self, t: np.ndarray) -> np.ndarray:
        """Piecewise-linear V(t) (cc) for an array of doses."""
        d, c = self.dose, self.cum_cc
        t = np.asarray(t, dtype=np.float64)
        if d.size == 0:
            return np.zeros_like(t)
        # number of samples with dose >= t  (d is descending: search on the reversed array)
        k = d.size - np.searchsorted(d[::-1], t, side="left")
        out = np.empty_like(t)
        top = k == 0
        out[top] = 0.0
        full = k == d.size
        out[full] = c[-1]
        mid = ~(top | full)
        if np.any(mid):
            km = k[mid]
            d_hi, d_lo = d[km - 1], d[km]
            c_hi, c_lo = c[km - 1], c[km]
            span = d_hi - d_lo
            frac = np.where(span > 0, (d_hi - t[mid]) / np.where(span > 0, span, 1.0), 0.0)
            out[mid] = c_hi + frac * (c_lo - c_hi)
        return out

    def dose_at(self, x_cc: np.ndarray) -> np.ndarray:
        """Piecewise-linear D_x (Gy) for an array of volumes (cc)."""
        d, c = self.dose, self.cum_cc
        x = np.asarray(x_cc, dtype=np.float64)
        if d.size == 0:
            return np.full_like(x, np.nan)
        k = np.searchsorted(c, x, side="left")
        out = np.empty_like(x)
        first = k == 0
        out[first] = d[0]
        beyond = k >= d.size
        out[beyond] = d[-1]
        mid = ~(first | beyond)
        if np.any(mid):
            km = k[mid]
            c0, c1 = c[km - 1], c[km]
            frac = (x[mid] - c0) / np.where(c1 > c0, c1 - c0, 1.0)
            out[mid] = d[km - 1] + frac * (d[km] - d[km - 1])
        return out


@dataclass
class DVH:
    """Cumulative DVH of one structure under one dose (see the module docstring).

    Build it with :func:`compute_dvh`.  Doses in Gy, volumes in cc or % of the
    structure volume.
    """

    name: str
    volume_cc: float
    mean_gy: float
    min_gy: float
    refinement: Refinement
    subdivisions: int
    tail_cc: float = 0.0
    mean_sq_gy2: float = float("nan")     # volume-weighted mean of the squared voxel dose
    _body_src: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _body: _Sorted | None = field(default=None, repr=False)
    _tail: _Sorted | None = field(default=None, repr=False)

    # ------------------------------------------------------------- internals
    def _body_sorted(self) -> _Sorted:
        if self._body is None:
            d, v = self._body_src
            self._body = _Sorted.build(d, v)
            self._body_src = None
        return self._body

    @property
    def _tail_limit_gy(self) -> float:
        """Doses at or above this come from the tail set."""
        if self._tail is None:
            return np.inf
        return float(self._tail.dose_at(np.array([self.tail_cc]))[0])

    # --------------------------------------------------------------- queries
    def d_cc(self, x_cc):
        """Minimum dose (Gy) to the hottest ``x_cc`` (scalar or array)."""
        x = np.atleast_1d(np.asarray(x_cc, dtype=np.float64))
        if np.any(x < 0):
            raise InputError(f"D_x cc needs x >= 0, got {x_cc!r}")
        out = np.empty_like(x)
        tail = (x <= self.tail_cc) if self._tail is not None else np.zeros(x.shape, bool)
        if np.any(tail):
            out[tail] = self._tail.dose_at(x[tail])
        if np.any(~tail):
            out[~tail] = self._body_sorted().dose_at(x[~tail])
        return float(out[0]) if np.ndim(x_cc) == 0 else out

    def d_pct(self, x_pct):
        """Minimum dose (Gy) to the hottest ``x_pct`` % of the structure volume."""
        x = np.asarray(x_pct, dtype=np.float64)
        if np.any((x < 0) | (x > 100)):
            raise InputError(f"D_x % needs 0 <= x <= 100, got {x_pct!r}")
        return self.d_cc(x / 100.0 * self.volume_cc)

    def v_gy_cc(self, t_gy):
        """Volume (cc) receiving at least ``t_gy``."""
        t = np.atleast_1d(np.asarray(t_gy, dtype=np.float64))
        out = np.empty_like(t)
        hi = t > self._tail_limit_gy
        if np.any(hi):
            out[hi] = self._tail.volume_at(t[hi])
        if np.any(~hi):
            out[~hi] = self._body_sorted().volume_at(t[~hi])
        return float(out[0]) if np.ndim(t_gy) == 0 else out

    def v_gy_pct(self, t_gy):
        """Volume (% of the structure) receiving at least ``t_gy``."""
        v = np.asarray(self.v_gy_cc(t_gy))
        out = 100.0 * v / self.volume_cc if self.volume_cc > 0 else np.full_like(v, np.nan)
        return float(out) if np.ndim(t_gy) == 0 else out

    def spared_cc(self, t_gy) -> float:
        """Volume (cc) receiving less than ``t_gy`` (parallel-organ critical volume)."""
        return float(self.volume_cc - self.v_gy_cc(float(t_gy)))

    @property
    def max_gy(self) -> float:
        if self._tail is not None and self._tail.dose.size:
            return float(self._tail.dose[0])
        return float(self._body_sorted().dose[0])

    @property
    def near_max_gy(self) -> float:
        """ICRU 91 near-maximum: D2% for volumes >= 2 cc, else D0.035cc."""
        return self.d_pct(2.0) if self.volume_cc >= 2.0 else self.d_cc(min(0.035, self.volume_cc))

    @property
    def near_min_gy(self) -> float:
        """D98% (ICRU 83/91 near-minimum)."""
        return self.d_pct(98.0)

    @property
    def median_gy(self) -> float:
        return self.d_pct(50.0)

    def mean_bed_gy(self, fractions: int, alpha_beta_gy: float) -> float:
        """Mean over the structure of the per-voxel BED (Gy) for ``fractions`` equal fractions.

        BED is quadratic in dose, so its mean follows from the first two moments of
        the voxel doses: ``mean(D) + mean(D^2) / (n alpha/beta)`` (voxel centres, as
        :attr:`mean_gy`).  It exceeds the BED of the mean dose whenever the dose is
        not uniform.  The mean EQD2 is this divided by ``1 + 2 / (alpha/beta)``.
        """
        if fractions < 1 or alpha_beta_gy <= 0:
            raise InputError(f"mean BED needs fractions >= 1 and alpha/beta > 0, got {fractions}, {alpha_beta_gy}")
        return float(self.mean_gy + self.mean_sq_gy2 / (fractions * alpha_beta_gy))

    def curve(self, dose_gy: np.ndarray) -> np.ndarray:
        """Cumulative DVH (% of volume) at the doses ``dose_gy``."""
        return np.asarray(self.v_gy_pct(np.asarray(dose_gy, dtype=np.float64)), dtype=np.float64)


def compute_dvh(dose, structure: Structure, refinement: Refinement | str = Refinement.AUTO,
                tail_cc: float = DEFAULT_TAIL_CC, weights: np.ndarray | None = None,
                name: str | None = None) -> DVH:
    """Cumulative DVH of ``structure`` under ``dose``.

    Parameters
    ----------
    dose : Dose or DoseField
        On the structure's grid (resample first otherwise).
    structure : Structure
    refinement : Refinement
        See the module docstring.
    tail_cc : float
        Volume of the sub-sampled hot tail (D_x for x <= tail_cc, Dmax).
    weights : ndarray, optional
        Occupancy to use instead of ``structure.weights`` (derived structures).
    name : str, optional

    Returns
    -------
    DVH
    """
    f = DoseField.of(dose)
    if not structure.grid.same_as(f.grid):
        raise StructureError(f"structure '{structure.name}' is not on the dose grid; resample the dose first")
    w_full = structure.weights if weights is None else np.asarray(weights, dtype=np.float32)
    has_fraction = structure.fraction is not None or weights is not None
    flat = np.flatnonzero(w_full.ravel() > 0)
    if flat.size == 0:
        raise StructureError(f"structure '{name or structure.name}' is empty on the dose grid")
    w = w_full.ravel()[flat].astype(np.float64)
    dvals = f.dose.ravel()[flat]
    vox = f.grid.voxel_volume_cc
    vol_cc = w * vox
    total = float(vol_cc.sum())
    d64 = dvals.astype(np.float64)
    mean = float(np.dot(d64, vol_cc) / total)
    mean_sq = float(np.dot(d64 * d64, vol_cc) / total)
    refinement = Refinement(refinement)
    if refinement is Refinement.AUTO:
        refinement = (Refinement.FULL if (structure.role.is_target or flat.size <= FULL_REFINE_MAX_VOXELS)
                      else Refinement.TAIL)
    occ = w_full if has_fraction else None
    dvh = DVH(name=name or structure.name, volume_cc=total, mean_gy=mean, min_gy=float(dvals.min()),
              refinement=refinement, subdivisions=1, mean_sq_gy2=mean_sq, _body_src=(dvals, vol_cc))
    if refinement is Refinement.NONE:
        return dvh

    if refinement is Refinement.FULL and occ is not None:
        part = w < 1.0 - 1e-6
        n_p = int(part.sum())
        s = _subdivisions(n_p)
        if n_p and s > 1:
            sd, sw = _samples_for(f, w[part].astype(np.float32), flat[part], s, occ)
            dvh._body_src = (np.concatenate([dvals[~part], sd]),
                             np.concatenate([vol_cc[~part], sw.astype(np.float64) * vox]))
            dvh.subdivisions = s

    # at most half the structure: coverage and D98 of a small target stay with the body set
    tail_cc = min(float(tail_cc), 0.5 * total)
    if tail_cc > 0:
        lo = f.local_min.ravel()[flat]
        hi = f.local_max.ravel()[flat]
        L = _tail_threshold(lo, vol_cc, tail_cc)
        cand = hi >= L
        s = _subdivisions(int(cand.sum()))
        if s > 1:
            sd, sw = _samples_for(f, w[cand].astype(np.float32), flat[cand], s, occ, TAIL_INSET)
            dvh._tail = _Sorted.build_top(sd, sw.astype(np.float64) * vox, tail_cc)
            dvh.tail_cc = tail_cc
            dvh.subdivisions = max(dvh.subdivisions, s)
    return dvh
def _tail_threshold(lo: np.ndarray, vol_cc: np.ndarray, tail_cc: float) -> float:
    """Largest L such that the voxels with lower bound >= L hold at least ``tail_cc``."""
    total = float(vol_cc.sum())
    if tail_cc >= total:
        return -np.inf
    m = min(lo.size, max(64, int(4 * tail_cc / max(vol_cc.max(), 1e-12)) + 1))
    while True:
        if m >= lo.size:
            order = np.argsort(-lo)
        else:
            part = np.argpartition(-lo, m)[:m]
            order = part[np.argsort(-lo[part])]
        cum = np.cumsum(vol_cc[order])
        k = int(np.searchsorted(cum, tail_cc, side="left"))
        if k < order.size:
            return float(lo[order[k]])
        if m >= lo.size:
            return -np.inf
        m = min(lo.size, 4 * m)
