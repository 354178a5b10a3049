"""The planning case: CT, density, structures and reference doses on one frame."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, StructureError
from .density import DensityCalibration
from .grid import Grid
from .structure import Structure, StructureRole

PATIENT_POSITIONS = ("HFS", "HFP", "FFS", "FFP", "HFDL", "HFDR", "FFDL", "FFDR")


@dataclass
class PatientInfo:
    """DICOM identifiers carried from import to export."""

    patient_id: str = "ANON"
    patient_name: str = "Anonymous"
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    frame_of_reference_uid: str | None = None
    ct_sop_instance_uids: list[str] = field(default_factory=list)  # in slice order (k)
    study_description: str = ""


@dataclass
class Dose:
    """A dose distribution on a grid.

    Parameters
    ----------
    grid : Grid
    dose_gy : ndarray of float32, shape ``grid.shape``
        Total dose over the course in Gy (``per_fraction`` says otherwise).
    description : str
    per_fraction : bool
    """

    grid: Grid
    dose_gy: np.ndarray
    description: str = ""
    per_fraction: bool = False

    def __post_init__(self) -> None:
        d = np.asarray(self.dose_gy, dtype=np.float32)
        if d.shape != self.grid.shape:
            raise InputError(f"dose '{self.description}': array shape {d.shape} does not match grid {self.grid.shape}")
        self.dose_gy = d

    @property
    def max_gy(self) -> float:
        return float(self.dose_gy.max()) if self.dose_gy.size else 0.0


@dataclass
class Case:
    """Everything known about one patient geometry.

    Parameters
    ----------
    name : str
        Case label (file or phantom name).
    grid : Grid
        The CT grid.
    hu : ndarray of float32, shape ``grid.shape``
        CT numbers in Hounsfield units.
    structures : dict of str -> Structure
        Keyed by the normalised (TG-263) name; masks on ``grid``.
    calibration : DensityCalibration
        HU -> relative electron density table.
    density : ndarray of float32, optional
        Relative electron density; computed from ``hu`` and ``calibration``
        when not given (phantoms may set it directly).
    patient_position : str
        DICOM PatientPosition (``HFS`` default).
    patient : PatientInfo
    doses : dict of str -> Dose
        Reference doses carried with the case (clinical RTDOSE, OpenKBP).
    source : str
        Where the case was loaded from.
    """

    name: str
    grid: Grid
    hu: np.ndarray
    structures: dict[str, Structure] = field(default_factory=dict)
    calibration: DensityCalibration = field(default_factory=DensityCalibration.default)
    density: np.ndarray | None = None
    patient_position: str = "HFS"
    patient: PatientInfo = field(default_factory=PatientInfo)
    doses: dict[str, Dose] = field(default_factory=dict)
    source: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        hu = np.asarray(self.hu, dtype=np.float32)
        if hu.shape != self.grid.shape:
            raise InputError(f"case '{self.name}': CT array shape {hu.shape} does not match grid {self.grid.shape}")
        self.hu = hu
        if self.density is None:
            self.density = self.calibration(hu)
        else:
            dens = np.asarray(self.density, dtype=np.float32)
            if dens.shape != self.grid.shape:
                raise InputError(f"case '{self.name}': density shape {dens.shape} does not match grid {self.grid.shape}")
            self.density = dens
        pos = str(self.patient_position).upper()
        if pos not in PATIENT_POSITIONS:
            raise InputError(f"case '{self.name}': unknown patient position {self.patient_position!r}; "
                             f"expected one of {', '.join(PATIENT_POSITIONS)}")
        self.patient_position = pos
        for key, s in self.structures.items():
            if not s.grid.same_as(self.grid):
                raise StructureError(f"case '{self.name}': structure '{key}' is not on the CT grid")

    # ------------------------------------------------------------ structures
    def structure(self, name: str) -> Structure:
        """The structure called ``name`` (exact, then case-insensitive match)."""
        if name in self.structures:
            return self.structures[name]
        low = {k.lower(): k for k in self.structures}
        if name.lower() in low:
            return self.structures[low[name.lower()]]
        avail = ", ".join(self.structures) or "none"
        raise StructureError(f"case '{self.name}': no structure '{name}' (available: {avail})")

    def has(self, name: str) -> bool:
        return name in self.structures or name.lower() in {k.lower() for k in self.structures}

    def add_structure(self, structure: Structure, replace: bool = False) -> Structure:
        if not structure.grid.same_as(self.grid):
            raise StructureError(f"structure '{structure.name}' is not on the CT grid of case '{self.name}'")
        if structure.name in self.structures and not replace:
            raise StructureError(f"case '{self.name}' already has a structure '{structure.name}'")
        self.structures[structure.name] = structure
        return structure

    def by_role(self, *roles: StructureRole) -> list[Structure]:
        return [s for s in self.structures.values() if s.role in roles]

    @property
    def body(self) -> Structure | None:
        ext = self.by_role(StructureRole.EXTERNAL)
        return ext[0] if ext else None

    def targets(self) -> list[Structure]:
        return [s for s in self.structures.values() if s.role.is_target]

    # --------------------------------------------------------------- summary
    def summary(self) -> str:
        """Multi-line text: grid, frame of reference and each structure's volume."""
        g = self.grid
        lines = [
            f"case: {self.name}" + (f"  ({self.source})" if self.source and self.source != self.name else ""),
            f"grid: {g.nx} x {g.ny} x {g.nz} voxels (x, y, z), spacing {g.spacing_mm[0]:.3g} x "
            f"{g.spacing_mm[1]:.3g} x {g.spacing_mm[2]:.3g} mm, origin ({g.origin_mm[0]:.1f}, "
            f"{g.origin_mm[1]:.1f}, {g.origin_mm[2]:.1f}) mm",
            f"patient position: {self.patient_position}; frame of reference: "
            f"{self.patient.frame_of_reference_uid or 'n/a'}",
            f"CT: {float(self.hu.min()):.0f} .. {float(self.hu.max()):.0f} HU; density table: {self.calibration.source}",
            f"structures ({len(self.structures)}):",
        ]
        width = max((len(n) for n in self.structures), default=4)
        for name, s in self.structures.items():
            orig = f"  [{s.original_name}]" if s.original_name and s.original_name != name else ""
            lines.append(f"  {name:<{width}}  {s.role.value:<8} {s.volume_cc:10.2f} cc{orig}")
        for name, d in self.doses.items():
            lines.append(f"dose '{name}': max {d.max_gy:.2f} Gy on {d.grid.shape} (z,y,x)")
        return "\n".join(lines)
