"""Beam models as data: the commissioned Gaussian pencil beam and matRad's SVD kernels.

A :class:`BeamModel` is everything the dose engine knows about a treatment
machine.  It is stored as YAML or JSON (``BeamModel.to_file`` /
``BeamModel.from_file``); every field is documented in
``sbrtplan/dose_engine/machines/README.md``.  Two kinds exist:

``ModelKind.GAUSSIAN`` (``gaussian_pencil_beam``)
    sbrtplan's own model, fitted to water-tank scans by :func:`commission`.
    The dose per MU of a rectangular beamlet is a sum of *terms*, each a
    depth function times a 2-D Gaussian-blurred rectangle (error functions):

    * three or four photon kernel components ``k`` (primary electrons, one or
      two near-scatter widths, far scatter) with depth function
      ``A_k(d) = w_k * b_k / (b_k - mu_k) * (exp(-mu_k d) - exp(-b_k d))``
      on radiological depth ``d`` and lateral width
      ``sigma_k(d) = sigma0_k + slope_k * d`` (mm, in water);
    * charged-particle contamination ``w_e * exp(-d / lambda_e)`` with a
      broad fixed width (shapes the build-up and surface dose);
    * head scatter: a fraction ``f_h`` of the fluence comes from an
      extra-focal source, i.e. the aperture blurred by ``sigma_h`` at the
      isocentre plane.  It makes the output rise with field size (Sc) and is
      linear in the aperture, so beamlets add up to fields exactly.

    The focal-spot penumbra is a Gaussian of ``source_sigma_x/y`` at the
    isocentre plane (X = leaf travel), an off-axis (horn) factor
    ``1 + h2 r^2 + h4 r^4`` (``r`` in units of 100 mm at the isocentre)
    multiplies the fluence, and dose falls with the inverse square of the
    distance to the source.  Output factors, PDDs and profiles for any field
    follow by integration (see :mod:`sbrtplan.dose_engine.water`), which also
    gives the tables a Clarkson-type MU check needs.

    Heterogeneity: radiological depth drives the depth functions, and each
    component's lateral width is divided by ``rho_bar**p_k`` where ``rho_bar``
    is the mean relative electron density over the last ``L_k`` mm of the ray
    inside the patient (electron-range-like memory; ``p = 1`` is exact density
    scaling of a kernel, O'Connor 1957).  This is what makes a small field in
    lung broaden and lose central dose.

``ModelKind.MATRAD_SVD`` (``matrad_svd``)
    matRad's photon pencil beam (Bortfeld, Schlegel & Rhein 1993, SVD of a
    pencil kernel into three depth/lateral separable components), read from a
    matRad machine file by :func:`load_matrad_machine`.  Lateral kernels are
    tabulated per SSD; the beamlet fluence is a square blurred by a Gaussian
    of FWHM ``penumbraFWHMatIso``.  Used to compare like for like with matRad.

Units: the engine's dose is Gy per MU (per fraction).  For the Gaussian kind
the calibration block fixes the absolute scale (e.g. 1 cGy/MU at 15 mm depth
for a 10 x 10 cm field at SSD 1000 mm).  For the matRad kind one matRad
beamlet weight unit is taken as 1 MU (matRad's own dose scale, uncalibrated).
"""

from __future__ import annotations

import enum
import math
import json
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import InputError
from .calibration import Calibration
from .water import water_dose_relative

FORMAT_TAG = "sbrtplan-beam-model/1"
DEFAULT_MODEL_NAME = "generic-6MV-sf"


class ModelKind(str, enum.Enum):
    GAUSSIAN = "gaussian_pencil_beam"
    MATRAD_SVD = "matrad_svd"


@dataclass
class KernelComponent:
    """One photon kernel component of the Gaussian model (see module docstring).

    Attributes
    ----------
    name : str
    weight : float
        ``w_k``: amplitude of the depth function (relative units).
    mu_per_mm : float
        Effective attenuation coefficient ``mu_k`` (1/mm).
    buildup_per_mm : float
        Build-up coefficient ``b_k`` (1/mm).
    sigma0_mm : float
        Lateral Gaussian width at zero depth in water (mm, physical).
    sigma_slope : float
        Growth of the width with radiological depth (mm per mm).
    scaling_length_mm : float
        Path length over which the density is averaged for lateral scaling.
    scaling_exponent : float
        Widths are divided by ``rho_bar**scaling_exponent``.
    """

    name: str
    weight: float
    mu_per_mm: float
    buildup_per_mm: float
    sigma0_mm: float
    sigma_slope: float
    scaling_length_mm: float = 10.0
    scaling_exponent: float = 1.0


@dataclass
class GaussianModel:
    """Dosimetric parameters of ``ModelKind.GAUSSIAN`` (see module docstring)."""

    components: list[KernelComponent]
    contamination_weight: float
    contamination_decay_mm: float
    contamination_sigma_mm: float
    head_scatter_fraction: float
    head_scatter_sigma_mm: float
    source_sigma_x_mm: float
    source_sigma_y_mm: float
    horn_h2: float = 0.0
    horn_h4: float = 0.0


@dataclass
class MatradKernel:
    """matRad SVD photon kernel data (``machine.data`` of ``photons_Generic.mat``)."""

    m_per_mm: float
    betas_per_mm: np.ndarray              # (3,)
    kernel_pos_mm: np.ndarray             # (n_r,) radii of the tabulated kernels
    kernel_ssd_mm: np.ndarray             # (n_ssd,)
    kernels: np.ndarray                   # (n_ssd, 3, n_r)
    primary_fluence: np.ndarray           # (n, 2): radius mm, relative fluence
    penumbra_fwhm_mm: float
    scd_mm: float
    conv_resolution_mm: float = 0.5      # matRad's intConvResolution (its kernels are normalised to it)

    def kernels_at_ssd(self, ssd_mm: float) -> np.ndarray:
        """The (3, n_r) kernels of the tabulated SSD nearest to ``ssd_mm`` (matRad's choice)."""
        i = int(np.argmin(np.abs(self.kernel_ssd_mm - ssd_mm)))
        return self.kernels[i]


@dataclass
class BeamModel:
    """A treatment-machine beam model (geometry, dosimetry, calibration).

    Attributes
    ----------
    name : str
    kind : ModelKind
    energy_mv : float
    sad_mm : float
        Source-axis distance.
    mlc_leaf_width_mm : float
        Nominal leaf width at the isocentre (documentation; the delivery's
        :class:`~sbrtplan.beams.MLCModel` gives the actual boundaries).
    mlc_transmission : float
        Fraction of open fluence through closed leaves (used by forward dose
        when the beam's MLC model does not override it).
    jaw_transmission : float
        Fraction of open fluence through the jaws.
    gaussian : GaussianModel or None
    matrad : MatradKernel or None
    calibration : Calibration
    description : str
    provenance : dict
        Where the model came from (data files, fit metrics).
    """

    name: str
    kind: ModelKind
    energy_mv: float = 6.0
    sad_mm: float = 1000.0
    mlc_leaf_width_mm: float = 5.0
    mlc_transmission: float = 0.015
    jaw_transmission: float = 0.002
    gaussian: GaussianModel | None = None
    matrad: MatradKernel | None = None
    calibration: Calibration = field(default_factory=Calibration)
    description: str = ""
    provenance: dict = field(default_factory=dict)
    mlc_models: dict = field(default_factory=dict)

    @property
    def is_gaussian(self) -> bool:
        """True for the Gaussian pencil-beam kind (the water-phantom formulas and kernels need it)."""
        return self.kind is ModelKind.GAUSSIAN and self.gaussian is not None

    def __post_init__(self) -> None:
        self.kind = ModelKind(self.kind)
        if self.kind is ModelKind.GAUSSIAN and self.gaussian is None:
            raise InputError(f"beam model '{self.name}': kind {self.kind.value} needs a 'dosimetry' block")
        if self.kind is ModelKind.MATRAD_SVD and self.matrad is None:
            raise InputError(f"beam model '{self.name}': kind {self.kind.value} needs matRad kernel data")
        if not self.sad_mm > 0:
            raise InputError(f"beam model '{self.name}': sad_mm must be positive, got {self.sad_mm}")
        for nm in ("mlc_transmission", "jaw_transmission"):
            v = float(getattr(self, nm))
            if not 0.0 <= v < 0.2:
                raise InputError(f"beam model '{self.name}': {nm} must be in [0, 0.2), got {v}")
        for nm, m in self.mlc_models.items():
            for key, lo, hi in (("transmission", 0.0, 0.2), ("dlg_mm", 0.0, 5.0), ("tongue_groove_mm", 0.0, 2.5)):
                v = m.get(key, 0.0)
                if not isinstance(v, (int, float)) or not (math.isfinite(v) and lo <= v < hi):
                    raise InputError(f"beam model '{self.name}': mlc_models.{nm}.{key}={v!r}; expected a number "
                                     f"in [{lo:g}, {hi:g})")
        self._scale_cache: float | None = None

    # ------------------------------------------------------------ MLC leakage
    def mlc_for(self, mlc):
        """The beam's MLC with this machine's commissioned leakage (``mlc_models`` entry of its name).

        An MLC the machine file does not list keeps its own transmission, leaf gap and
        tongue-and-groove width.
        """
        key = _mlc_key(mlc.name)
        for nm, m in self.mlc_models.items():
            if _mlc_key(nm) == key:
                return mlc.with_leakage(float(m.get("transmission", mlc.transmission)), float(m.get("dlg_mm", 0.0)),
                                        float(m.get("tongue_groove_mm", 0.0)))
        return mlc

    def with_calibration(self, calibration: Calibration) -> "BeamModel":
        """A copy calibrated to other reference conditions (the dose per MU scales accordingly)."""
        return replace(self, calibration=replace(calibration))

    # ------------------------------------------------------------ calibration
    @property
    def gy_per_mu_scale(self) -> float:
        """Factor turning the model's relative dose into Gy per MU.

        Gaussian kind: from :attr:`calibration` (evaluated once in water).
        matRad kind: 1 (matRad's own scale).
        """
        if self.kind is ModelKind.MATRAD_SVD:
            return 1.0
        if self._scale_cache is None:
            c = self.calibration
            rel = water_dose_relative(self, c.field_mm, c.field_mm, c.ssd_mm, np.array([c.depth_mm]),
                                      np.zeros(1), np.zeros(1), scale=1.0)[0]
            if not rel > 0:
                raise InputError(f"beam model '{self.name}': calibration point has zero dose")
            self._scale_cache = c.dose_cgy_per_mu / 100.0 / float(rel)
        return self._scale_cache

    # -------------------------------------------------------------- file I/O
    def to_dict(self) -> dict:
        d: dict = {
            "format": FORMAT_TAG,
            "name": self.name,
            "kind": self.kind.value,
            "description": self.description,
            "energy_mv": float(self.energy_mv),
            "geometry": {
                "sad_mm": float(self.sad_mm),
                "mlc_leaf_width_mm": float(self.mlc_leaf_width_mm),
                "mlc_transmission": float(self.mlc_transmission),
                "jaw_transmission": float(self.jaw_transmission),
            },
        }
        if self.gaussian is not None:
            g = self.gaussian
            d["geometry"]["source_sigma_x_mm"] = float(g.source_sigma_x_mm)
            d["geometry"]["source_sigma_y_mm"] = float(g.source_sigma_y_mm)
            d["dosimetry"] = {
                "components": [{k: (float(v) if not isinstance(v, str) else v) for k, v in asdict(c).items()}
                               for c in g.components],
                "contamination": {"weight": float(g.contamination_weight),
                                  "decay_mm": float(g.contamination_decay_mm),
                                  "sigma_mm": float(g.contamination_sigma_mm)},
                "head_scatter": {"fraction": float(g.head_scatter_fraction),
                                 "sigma_mm": float(g.head_scatter_sigma_mm)},
                "off_axis": {"h2": float(g.horn_h2), "h4": float(g.horn_h4)},
            }
            d["calibration"] = {k: (v if isinstance(v, str) else float(v))
                                for k, v in asdict(self.calibration).items()}
        if self.mlc_models:
            d["mlc_models"] = _plain(self.mlc_models)
        if self.matrad is not None:
            m = self.matrad
            d["matrad"] = {
                "m_per_mm": float(m.m_per_mm), "betas_per_mm": [float(b) for b in m.betas_per_mm],
                "penumbra_fwhm_mm": float(m.penumbra_fwhm_mm), "scd_mm": float(m.scd_mm),
                "conv_resolution_mm": float(m.conv_resolution_mm),
                "kernel_pos_mm": m.kernel_pos_mm.tolist(), "kernel_ssd_mm": m.kernel_ssd_mm.tolist(),
                "kernels": m.kernels.tolist(), "primary_fluence": m.primary_fluence.tolist(),
            }
        if self.provenance:
            d["provenance"] = _plain(self.provenance)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> "BeamModel":
        if not isinstance(d, dict):
            raise InputError(f"{source}: a beam model file must hold a mapping, got {type(d).__name__}")
        if d.get("format") != FORMAT_TAG:
            raise InputError(f"{source}: 'format' must be {FORMAT_TAG!r}, got {d.get('format')!r}")
        try:
            kind = ModelKind(d.get("kind"))
        except ValueError:
            raise InputError(f"{source}: 'kind' must be one of {[k.value for k in ModelKind]}, "
                             f"got {d.get('kind')!r}") from None
        geo = _section(d, "geometry", source)
        gauss = None
        matrad = None
        cal = Calibration()
        if kind is ModelKind.GAUSSIAN:
            dos = _section(d, "dosimetry", source)
            comps = dos.get("components")
            if not isinstance(comps, list) or not comps:
                raise InputError(f"{source}: dosimetry.components must be a non-empty list")
            components = []
            for i, c in enumerate(comps):
                try:
                    components.append(KernelComponent(**c))
                except TypeError as exc:
                    raise InputError(f"{source}: dosimetry.components[{i}]: {exc}") from None
            con = _section(dos, "contamination", source)
            hs = _section(dos, "head_scatter", source)
            oa = dos.get("off_axis", {})
            gauss = GaussianModel(
                components=components,
                contamination_weight=_f(con, "weight", source), contamination_decay_mm=_f(con, "decay_mm", source),
                contamination_sigma_mm=_f(con, "sigma_mm", source),
                head_scatter_fraction=_f(hs, "fraction", source), head_scatter_sigma_mm=_f(hs, "sigma_mm", source),
                source_sigma_x_mm=_f(geo, "source_sigma_x_mm", source),
                source_sigma_y_mm=_f(geo, "source_sigma_y_mm", source),
                horn_h2=float(oa.get("h2", 0.0)), horn_h4=float(oa.get("h4", 0.0)))
            _check_gaussian(gauss, source)
            if "calibration" in d:
                try:
                    cal = Calibration(**{k: (str(v) if k == "convention" else float(v))
                                         for k, v in d["calibration"].items()})
                except (TypeError, ValueError) as exc:
                    raise InputError(f"{source}: calibration: {exc}") from None
        else:
            m = _section(d, "matrad", source)
            try:
                matrad = MatradKernel(
                    m_per_mm=float(m["m_per_mm"]), betas_per_mm=np.asarray(m["betas_per_mm"], float),
                    kernel_pos_mm=np.asarray(m["kernel_pos_mm"], float),
                    kernel_ssd_mm=np.asarray(m["kernel_ssd_mm"], float),
                    kernels=np.asarray(m["kernels"], float), primary_fluence=np.asarray(m["primary_fluence"], float),
                    penumbra_fwhm_mm=float(m["penumbra_fwhm_mm"]), scd_mm=float(m.get("scd_mm", 500.0)),
                    conv_resolution_mm=float(m.get("conv_resolution_mm", 0.5)))
            except KeyError as exc:
                raise InputError(f"{source}: matrad block lacks {exc}") from None
        return cls(name=str(d.get("name", Path(source).stem)), kind=kind, energy_mv=float(d.get("energy_mv", 6.0)),
                   sad_mm=_f(geo, "sad_mm", source), mlc_leaf_width_mm=float(geo.get("mlc_leaf_width_mm", 5.0)),
                   mlc_transmission=float(geo.get("mlc_transmission", 0.015)),
                   jaw_transmission=float(geo.get("jaw_transmission", 0.002)),
                   gaussian=gauss, matrad=matrad, calibration=cal, description=str(d.get("description", "")),
                   provenance=dict(d.get("provenance", {}) or {}), mlc_models=_mlc_models(d, source))

    def to_file(self, path: str | Path) -> Path:
        """Write the model as YAML (``.yaml``/``.yml``) or JSON (``.json``), atomically."""
        from .._log import atomic_output

        path = Path(path)
        d = self.to_dict()
        suffix = path.suffix.lower()
        if suffix not in (".yaml", ".yml", ".json"):
            raise InputError(f"{path}: beam model files must end in .yaml, .yml or .json")
        with atomic_output(path) as tmp:
            if suffix == ".json":
                tmp.write_text(json.dumps(d, indent=1))
            else:
                import yaml
                tmp.write_text(_yaml_header(self) + yaml.safe_dump(d, sort_keys=False, width=100))
        return path

    @classmethod
    def from_file(cls, path: str | Path) -> "BeamModel":
        """Read a model written by :meth:`to_file` (YAML or JSON)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise InputError(f"{path}: cannot read beam model ({exc.strerror})") from None
        try:
            if path.suffix.lower() == ".json":
                d = json.loads(text)
            else:
                import yaml
                d = yaml.safe_load(text)
        except Exception as exc:  # yaml/json parse errors have many types
            raise InputError(f"{path}: not a valid YAML/JSON beam model ({exc.__class__.__name__}: "
                             f"{str(exc).splitlines()[0]})") from None
        return cls.from_dict(d, source=str(path))

    def summary(self) -> str:
        lines = [f"beam model '{self.name}' ({self.kind.value}, {self.energy_mv:g} MV, SAD {self.sad_mm:g} mm)"]
        if self.gaussian is not None:
            g = self.gaussian
            for c in g.components:
                lines.append(f"  {c.name:<12} w={c.weight:.4f} mu={c.mu_per_mm:.5f}/mm b={c.buildup_per_mm:.4f}/mm "
                             f"sigma={c.sigma0_mm:.2f}+{c.sigma_slope:.4f}*d mm  scaling L={c.scaling_length_mm:g} mm "
                             f"p={c.scaling_exponent:g}")
            lines.append(f"  contamination w={g.contamination_weight:.4f} decay {g.contamination_decay_mm:.2f} mm "
                         f"sigma {g.contamination_sigma_mm:.1f} mm; head scatter {g.head_scatter_fraction:.3f} "
                         f"sigma {g.head_scatter_sigma_mm:.1f} mm")
            lines.append(f"  source sigma x {g.source_sigma_x_mm:.2f} mm, y {g.source_sigma_y_mm:.2f} mm; horn "
                         f"h2={g.horn_h2:+.4f} h4={g.horn_h4:+.4f}")
            c = self.calibration
            lines.append(f"  calibration {c.dose_cgy_per_mu:g} cGy/MU at {c.depth_mm:g} mm, "
                         f"{c.field_mm / 10:g}x{c.field_mm / 10:g} cm, SSD {c.ssd_mm:g} mm")
        return "\n".join(lines)


# ---------------------------------------------------------------- helpers
def _mlc_key(name: str) -> str:
    return str(name).lower().replace("-", "").replace("_", "").replace(" ", "")


def _mlc_models(d: dict, source: str) -> dict:
    m = d.get("mlc_models", {}) or {}
    if not isinstance(m, dict) or not all(isinstance(v, dict) for v in m.values()):
        raise InputError(f"{source}: mlc_models must map MLC names to blocks of transmission, dlg_mm, "
                         "tongue_groove_mm")
    return {str(k): dict(v) for k, v in m.items()}


def _plain(obj):
    """Convert numpy scalars/arrays inside ``obj`` to plain Python for YAML/JSON."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _yaml_header(model: BeamModel) -> str:
    return (f"# sbrtplan beam model '{model.name}' ({model.kind.value}).\n"
            "# Field-by-field documentation: sbrtplan/dose_engine/machines/README.md\n")


def _section(d: dict, key: str, source: str) -> dict:
    v = d.get(key)
    if not isinstance(v, dict):
        raise InputError(f"{source}: missing or invalid '{key}' block")
    return v


def _f(d: dict, key: str, source: str) -> float:
    if key not in d:
        raise InputError(f"{source}: missing '{key}'")
    try:
        return float(d[key])
    except (TypeError, ValueError):
        raise InputError(f"{source}: '{key}' must be a number, got {d[key]!r}") from None


def _check_gaussian(g: GaussianModel, source: str) -> None:
    for i, c in enumerate(g.components):
        if c.buildup_per_mm <= c.mu_per_mm:
            raise InputError(f"{source}: component {c.name!r}: buildup_per_mm must exceed mu_per_mm")
        if c.sigma0_mm <= 0 or c.sigma_slope < 0 or c.scaling_length_mm <= 0:
            raise InputError(f"{source}: component {c.name!r}: sigma0_mm and scaling_length_mm must be > 0 "
                             "and sigma_slope >= 0")
    if len(g.components) > 4:
        raise InputError(f"{source}: at most 4 photon kernel components are supported, got {len(g.components)}")
    for nm in ("contamination_decay_mm", "contamination_sigma_mm", "head_scatter_sigma_mm",
               "source_sigma_x_mm", "source_sigma_y_mm"):
        if not getattr(g, nm) > 0:
            raise InputError(f"{source}: {nm} must be positive")
    if not 0.0 <= g.head_scatter_fraction < 1.0:
        raise InputError(f"{source}: head_scatter fraction must be in [0, 1)")


# ------------------------------------------------------------ public loaders
def shipped_models() -> list[str]:
    """Names of the beam models shipped in ``sbrtplan/dose_engine/machines``."""
    root = resources.files("sbrtplan.dose_engine") / "machines"
    return sorted(p.name.rsplit(".", 1)[0] for p in root.iterdir() if p.name.endswith((".yaml", ".json")))


def default_beam_model() -> BeamModel:
    """The shipped generic 6 MV model (``generic-6MV-sf``): commissioned on the PTW water-tank scans,
    published small-field output factors and a Monte Carlo lung slab."""
    return load_beam_model(DEFAULT_MODEL_NAME)


def load_beam_model(name_or_path: str | Path) -> BeamModel:
    """Load a beam model by shipped name, model file path or matRad machine file.

    Parameters
    ----------
    name_or_path : str or Path
        ``"generic-6MV"`` (a shipped model), a ``.yaml``/``.json`` model file,
        or a matRad ``.mat`` photon machine file.
    """
    text = str(name_or_path)
    p = Path(text)
    if p.suffix.lower() == ".mat":
        return load_matrad_machine(p)
    if p.suffix.lower() in (".yaml", ".yml", ".json") and p.exists():
        return BeamModel.from_file(p)
    root = resources.files("sbrtplan.dose_engine") / "machines"
    for suffix in (".yaml", ".json"):
        ref = root / f"{text}{suffix}"
        if ref.is_file():
            with resources.as_file(ref) as fp:
                return BeamModel.from_file(fp)
    raise InputError(f"beam model {text!r} not found: expected a shipped name ({', '.join(shipped_models())}), "
                     "a .yaml/.json model file or a matRad .mat machine file")


def load_matrad_machine(path: str | Path) -> BeamModel:
    """Read a matRad photon machine (``photons_*.mat``, SVD kernel model).

    Raises
    ------
    InputError
        If the file is not a matRad photon machine with kernel data.
    """
    import scipy.io as sio

    path = Path(path)
    try:
        m = sio.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except (OSError, ValueError, NotImplementedError) as exc:
        raise InputError(f"{path}: cannot read as a MATLAB v5 .mat file ({exc})") from None
    if "machine" not in m:
        raise InputError(f"{path}: no 'machine' variable (expected a matRad machine file)")
    mach = m["machine"]
    try:
        meta, data = mach.meta, mach.data
        mode = str(getattr(meta, "radiationMode", ""))
        if mode != "photons":
            raise InputError(f"{path}: radiationMode is {mode!r}, expected 'photons'")
        kernel_list = np.atleast_1d(data.kernel)
        ssd = np.array([float(k.SSD) for k in kernel_list])
        kernels = np.stack([np.stack([np.asarray(k.kernel1, float), np.asarray(k.kernel2, float),
                                      np.asarray(k.kernel3, float)]) for k in kernel_list])
        mk = MatradKernel(m_per_mm=float(data.m), betas_per_mm=np.asarray(data.betas, float).reshape(3),
                          kernel_pos_mm=np.asarray(data.kernelPos, float), kernel_ssd_mm=ssd, kernels=kernels,
                          primary_fluence=np.asarray(data.primaryFluence, float).reshape(-1, 2),
                          penumbra_fwhm_mm=float(data.penumbraFWHMatIso), scd_mm=float(meta.SCD))
        sad = float(meta.SAD)
        name = f"matRad-{getattr(meta, 'machine', 'photons')}"
    except AttributeError as exc:
        raise InputError(f"{path}: not a matRad photon machine (missing {exc})") from None
    return BeamModel(name=name, kind=ModelKind.MATRAD_SVD, energy_mv=float(getattr(data, "energy", 6)), sad_mm=sad,
                     matrad=mk, description=str(getattr(meta, "description", "")).strip(),
                     provenance={"source": path.name})
