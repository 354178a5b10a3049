"""The planning recipe: every tuning value of the automatic planner, versioned, in one file.

A :class:`PlanningRecipe` holds the weights, margins, iteration counts and time
budgets that turn a protocol's goals into an optimisation (``workflow.goal_stages``,
``workflow.penalties``, ``workflow.imrt``, ``workflow.vmat``).  The values live in a
YAML file (the shipped one is ``workflow/recipes/default.yaml``, each value with a
one-line comment saying what it means and how it was measured); the code holds
only their names, meanings and allowed ranges (:func:`recipe_fields`).

A recipe file::

    name: my-recipe          # free text, recorded in metrics.json
    version: 3               # integer >= 1, recorded in metrics.json
    penalties:
      hotspot_aim: 0.97      # any subset of the fields; the rest keep the shipped values

is checked when it is loaded (known sections and keys, types, finite values inside
each field's range); a bad file raises :class:`~sbrtplan.errors.InputError` naming
the file and the key.  The recipe's :attr:`PlanningRecipe.sha256` covers the
resolved values (not the comments or the key order), so two files that plan the
same way hash the same.  The recipe travels explicitly (``PlanOptions.recipe``,
a ``recipe=`` argument of the planning functions); nothing reads a global.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path

from ..errors import InputError

DEFAULT_RECIPE_PATH = Path(__file__).resolve().parent / "recipes" / "default.yaml"


def _v(meaning: str, lo: float, hi: float, kind: type = float):
    """A recipe field (no default: the values live in the recipe file) with its meaning and range."""
    return field(metadata={"meaning": meaning, "range": (lo, hi), "kind": kind})


@dataclass(frozen=True)
class StageRecipe:
    """Prioritised stages from goals (``workflow.goal_stages``)."""

    hard_relax_cost: float = _v("relaxation cost of a hard organ limit in the prioritised stages "
                                "(relaxed only when nothing else helps)", 0.0, 1e9)
    target_relax_cost: float = _v("relaxation cost of target minimums / maxima (relaxed first)", 0.0, 1e9)
    hotspot_fraction: float = _v("x Rx above which the dose outside the GTV/ITV is penalised (mean squared) "
                                 "in the conformity stage", 0.5, 2.0)
    keep_rms_underdose: float = _v("x Rx: RMS allowance with which a stage's optimum is kept in the later stages",
                                   0.0, 0.1)
    smoothness_weight: float = _v("weight of the fluence-smoothness term in the conformity and ALARA stages",
                                  0.0, 1e6)
    body_alara_weight: float = _v("weight of the body's mean dose in the ALARA stage (each organ's: 1 / their "
                                  "number)", 0.0, 1e6)
    body_fallback_fraction: float = _v("x Rx: body over-dose reference of the conformity stage when no ring, hot-spot "
                                       "or soft goal exists", 0.0, 2.0)


@dataclass(frozen=True)
class PenaltyRecipe:
    """The weighted penalty model with measured limits (``workflow.penalties``)."""

    w_target_under: float = _v("weight of the target under-dose penalty (per unit relative volume)", 0.0, 1e9)
    w_gtv_under: float = _v("weight of the GTV/ITV under-dose penalty", 0.0, 1e9)
    w_target_hot: float = _v("weight of the over-dose penalty in the target outside the GTV/ITV", 0.0, 1e9)
    w_boost_hot: float = _v("weight of the over-dose penalty inside the GTV/ITV and of the PTV maximum", 0.0, 1e9)
    w_falloff: float = _v("weight of the normal-tissue fall-off penalty (scaled by its volume over the "
                          "target's)", 0.0, 1e9)
    w_hard: float = _v("weight of a hard (mandatory) organ limit's over-dose penalty", 0.0, 1e9)
    w_optional: float = _v("weight of an optional organ limit's over-dose penalty", 0.0, 1e9)
    hard_limit_margin: float = _v("hard organ limits are met on the optimiser's dose at this fraction of the "
                                  "limit", 0.5, 1.0)
    hard_ref: float = _v("x limit: reference of a hard organ limit's over-dose penalty", 0.5, 1.0)
    hard_ref_floor: float = _v("x limit: lowest the reference of a violated hard organ limit moves", 0.0, 1.0)
    hard_growth: float = _v("weight factor of a violated hard limit (organ, PTV maximum) per round", 1.0, 100.0)
    allowed_volume_factor: float = _v("factor of the hottest volume a dose-volume limit allows that its penalty "
                                      "leaves free (the rest is the margin that makes the limit hold)", 0.0, 1.0)
    target_under_ref: float = _v("x Rx: reference of the target under-dose penalty", 0.8, 1.2)
    band_mm: float = _v("mm: width of the PTV! band next to the removed organ PRV where the coverage reference is "
                        "graded down (0: no band)", 0.0, 20.0)
    band_low_ref: float = _v("x Rx: coverage reference at the removed PRV (inner band edge: Rx)", 0.5, 1.2)
    band_weight: float = _v("factor of the coverage weight inside that band", 0.0, 10.0)
    target_hot_ref: float = _v("x Rx: over-dose reference in the target outside the GTV/ITV", 0.8, 2.0)
    hot_floor_margin: float = _v("x Rx above the under-dose reference: lowest the hot-spot and target "
                                 "dose-volume references move", 0.0, 0.5)
    hotspot_aim: float = _v("x the protocol's limit: aimed hot-spot limit (External-GTV D0.035cc), on the "
                            "normalised dose", 0.5, 1.0)
    hotspot_growth: float = _v("weight factor of the hot-spot limit per violated round", 1.0, 100.0)
    boost_hot_ref: float = _v("x Rx: over-dose reference inside the GTV/ITV", 0.8, 3.0)
    target_max_ref: float = _v("x the protocol's PTV maximum: reference of the PTV-maximum penalty", 0.5, 1.0)
    target_max_aim: float = _v("x the protocol's PTV maximum: the measured limit (normalisation margin)", 0.5, 1.0)
    target_max_floor: float = _v("x Rx above the under-dose reference: lowest the PTV-maximum reference moves",
                                 0.0, 1.0)
    falloff_shift_mm: float = _v("mm: the fall-off profile starts this far outside the PTV surface "
                                 "(penumbra)", 0.0, 20.0)
    falloff_max: float = _v("x Rx: highest dose the fall-off profile allows", 0.1, 2.0)
    d2cm_ref_factor: float = _v("factor of the fall-off reference from 2 cm on (the RTOG D2cm region)",
                                0.1, 1.0)
    d2cm_limit_ref: float = _v("x RTOG 'none' D2cm: reference of the D2cm limit's penalty (VMAT MU re-solve)",
                               0.1, 1.5)
    d2cm_limit_factor: float = _v("x RTOG 'none' D2cm: the measured D2cm limit (VMAT MU re-solve)", 0.1, 1.5)
    w_d2cm_limit: float = _v("weight of the D2cm limit's penalty (0: no D2cm limit)", 0.0, 1e9)
    coverage_margin_pct: float = _v("% of volume: a coverage goal is aimed (optimised and normalised to) this much "
                                    "above the protocol's level", 0.0, 5.0)
    coverage_aim_max_pct: float = _v("% of volume: a coverage goal is never aimed higher than this", 90.0, 100.0)
    normalisation_cap: float = _v("x limit: the plan's normalisation stops this far under a higher-priority limit "
                                  "it would break (hard organ limit, PTV maximum)", 0.9, 1.0)
    coverage_growth: float = _v("weight factor of the coverage limit (and limits of its priority) per "
                                "violated round", 1.0, 100.0)
    coverage_max_factor: float = _v("largest total growth factor of the coverage weight", 1.0, 1e6)
    target_dv_ref: float = _v("x limit: penalty reference of a target dose-volume upper limit "
                              "(TG-119 PTV D10)", 0.5, 1.0)
    target_dv_margin: float = _v("x limit: measured target dose-volume upper limit", 0.5, 1.0)


@dataclass(frozen=True)
class ImrtRecipe:
    """IMRT beam selection, aperture generation and segment weights (``workflow.imrt``)."""

    fluence_time_limit_s: float = _v("processor s: budget of the prioritised fluence stages", 1.0, 86400.0)
    segment_time_limit_s: float = _v("processor s: budget of the prioritised segment-weight solve",
                                     1.0, 86400.0)
    min_beam_separation_deg: float = _v("deg: smallest angle between two automatically selected beams",
                                        0.0, 180.0)
    selection_pool_factor: int = _v("the lasso path runs until this many times n_beams candidates are active",
                                    1, 100, int)
    price_fraction: float = _v("an aperture is added to every beam priced at least this fraction of the best",
                               0.0, 1.0)
    generation_iterations_factor: int = _v("pricing rounds at most this multiple of the segments per beam",
                                           1, 100, int)
    reweight_every: int = _v("violated limits are re-weighted every this many pricing rounds", 1, 1000, int)
    aperture_time_limit_s: float = _v("processor s: budget of the pricing rounds", 1.0, 86400.0)
    fluence_rounds: int = _v("re-weighting rounds of the penalty path after the last aperture", 1, 1000, int)


@dataclass(frozen=True)
class VmatRecipe:
    """VMAT direct aperture optimisation and the delivered-dose MU re-solve (``workflow.vmat``)."""

    dao_apertures_per_iteration: int = _v("DAO column generation: apertures added per iteration", 1, 10000, int)
    dao_max_iterations: int = _v("DAO column generation: iterations at most", 0, 10000, int)
    dao_refine_passes: int = _v("DAO leaf-refinement sweeps", 0, 1000, int)
    dose_step_deg: float = _v("deg: gantry step of the DAO's delivery model (samples per sector)", 0.1, 30.0)
    dao_coverage_weight: float = _v("weight of the coverage stage's objectives in the DAO's summed objective",
                                    0.0, 1e9)
    dao_falloff_weight: float = _v("weight of the fall-off profile within 2 cm of the PTV in the DAO", 0.0, 1e9)
    dao_d2cm_weight: float = _v("weight of the fall-off profile beyond 2 cm of the PTV in the DAO", 0.0, 1e9)
    dao_hotspot_weight: float = _v("factor of the conformity stage's other objectives (hot spots, optional "
                                   "organs) in the DAO", 0.0, 1e9)
    dao_time_limit_s: float = _v("processor s: budget of the DAO", 1.0, 86400.0)
    resolve_d2cm_outer_mm: float = _v("mm: the MU re-solve's D2cm limit covers final-dose voxels from 2 cm to "
                                      "this distance from the PTV", 20.0, 300.0)
    resolve_rounds: int = _v("re-weighting rounds of the sector-MU re-solve on the delivered dose", 1, 1000, int)


_SECTIONS = {"stages": StageRecipe, "penalties": PenaltyRecipe, "imrt": ImrtRecipe, "vmat": VmatRecipe}


@dataclass(frozen=True)
class PlanningRecipe:
    """Every tuning value of the planner (see the module docstring); build with :func:`load_recipe`.

    Attributes
    ----------
    name : str
        Free text recorded with each plan.
    version : int
        The recipe's version (>= 1), recorded with each plan.
    stages, penalties, imrt, vmat
        The values of each part of the planner (field meanings: :func:`recipe_fields`).
    source : str
        File the recipe was read from (not part of the hash).
    """

    name: str
    version: int
    stages: StageRecipe
    penalties: PenaltyRecipe
    imrt: ImrtRecipe
    vmat: VmatRecipe
    source: str = field(default="", compare=False)

    def values(self) -> dict:
        """The resolved values by section (what the hash covers, with name and version)."""
        out: dict = {"name": self.name, "version": self.version}
        for sec in _SECTIONS:
            part = getattr(self, sec)
            out[sec] = {f.name: getattr(part, f.name) for f in fields(part)}
        return out

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the canonical JSON of :meth:`values` (comments and key order do not count)."""
        text = json.dumps(self.values(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def as_metrics(self) -> dict:
        """The ``plan.recipe`` entry of ``metrics.json``."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256,
                "source": Path(self.source).name if self.source else ""}


def recipe_fields() -> dict[str, dict[str, dict]]:
    """Per section, per field: its meaning, allowed range and type (for documentation and checks)."""
    return {sec: {f.name: dict(f.metadata) for f in fields(cls)} for sec, cls in _SECTIONS.items()}


def _check_value(path: str, key: str, value, meta: dict):
    kind = meta["kind"]
    lo, hi = meta["range"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"recipe {path}: {key} must be a number ({meta['meaning']}), got {value!r}")
    if kind is int and not float(value).is_integer():
        raise InputError(f"recipe {path}: {key} must be an integer, got {value!r}")
    if not math.isfinite(float(value)):
        raise InputError(f"recipe {path}: {key} must be finite, got {value!r}")
    if not lo <= value <= hi:
        raise InputError(f"recipe {path}: {key} must be in [{lo:g}, {hi:g}] ({meta['meaning']}), got {value!r}")
    return int(value) if kind is int else float(value)


def _read(path: Path) -> dict:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"recipe {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"recipe {path}: cannot be read ({type(exc).__name__}: {exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"recipe {path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise InputError(f"recipe {path}: must be a mapping of name, version and sections "
                         f"{sorted(_SECTIONS)}, got {type(data).__name__}")
    return data


def _build(path: Path, data: dict, base: PlanningRecipe | None) -> PlanningRecipe:
    unknown = sorted(set(map(str, data)) - {"name", "version", *_SECTIONS})
    if unknown:
        raise InputError(f"recipe {path}: unknown key '{unknown[0]}' (expected name, version, "
                         f"{', '.join(_SECTIONS)})")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"recipe {path}: name must be a non-empty string, got {name!r}")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InputError(f"recipe {path}: version must be an integer >= 1, got {version!r}")
    parts = {}
    for sec, cls in _SECTIONS.items():
        given = data.get(sec) or {}
        if not isinstance(given, dict):
            raise InputError(f"recipe {path}: {sec} must be a mapping of values, got {type(given).__name__}")
        meta = {f.name: f.metadata for f in fields(cls)}
        bad = sorted(set(map(str, given)) - set(meta))
        if bad:
            raise InputError(f"recipe {path}: unknown key '{sec}.{bad[0]}'")
        values = {}
        for key, m in meta.items():
            if key in given:
                values[key] = _check_value(str(path), f"{sec}.{key}", given[key], m)
            elif base is not None:
                values[key] = getattr(getattr(base, sec), key)
            else:
                raise InputError(f"recipe {path}: missing key '{sec}.{key}' ({m['meaning']})")
        parts[sec] = cls(**values)
    return PlanningRecipe(name=name.strip(), version=int(version), source=str(path), **parts)


def load_recipe(path: str | Path | None = None) -> PlanningRecipe:
    """Read and check a recipe file (None: the shipped default).

    Keys a file leaves out keep the shipped default's values; ``name`` and ``version`` are
    required.  Raises :class:`~sbrtplan.errors.InputError` (one line naming the file and key) for
    an unreadable file, unknown sections or keys, non-numeric, non-finite or out-of-range values.
    """
    if path is None:
        return default_recipe()
    p = Path(path)
    if p.is_dir():
        raise InputError(f"recipe {p}: is a folder, expected a .yaml file")
    return _build(p, _read(p), default_recipe())


@lru_cache(maxsize=1)
def default_recipe() -> PlanningRecipe:
    """The shipped recipe (``workflow/recipes/default.yaml``), complete: every field is set there."""
    return _build(DEFAULT_RECIPE_PATH, _read(DEFAULT_RECIPE_PATH), None)
