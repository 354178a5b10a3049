"""Cohort description: which cases, which protocol and schemes, which options.

A cohort file is YAML::

    protocol: bone_spine           # default for every case
    schemes: [27/3, 30/3]          # one plan per case x scheme
    technique: imrt                # imrt | vmat
    beams: 7                       # IMRT beam count (optional)
    select_beams: true             # IMRT: automatic beam-angle selection (false: site template)
    grid_mm: 2.0                   # dose grid (optional)
    output: cohort-out             # relative to the cohort file
    cases:
      - name: patient01
        case: phantom:spine        # a DICOM folder, a matRad .mat, an OpenKBP folder or phantom:NAME
      - name: patient02
        case: ../data/p02          # relative paths are relative to the cohort file
        rtstruct: ../data/p02/rs.dcm
        target: PTV_27
        protocol: bone_spine       # per-case override of protocol / schemes / options
      - name: patient03            # several targets in one plan, each with its prescription
        case: phantom:spine_two_levels
        targets: {PTV1: 27/3, PTV2: 24/3}   # (or a list: [PTV1:27/3, PTV2:24/3]); replaces schemes

    qa: {phantom: qa_slab}         # optional: patient-specific QA of every plan (sbrtplan.qa.cohort_qa_options:
                                   # phantom, grid_mm, gantry, couch, chamber, criteria; per case also measured,
                                   # measured_point_gy, shift_mm); the QA page goes into each report.html and
                                   # qa_summary.csv / .json give the cohort's pass rates

A TBI cohort has ``technique: tbi``, its schemes are the TBI prescriptions (``12/6``), no protocol,
and a ``tbi`` mapping with the options of ``sbrtplan tbi`` (``sbrtplan.tbi.batch``); the cohort
summary then carries the standard's two quality indicators (``tbi_quality_indicators.json``).

Only the keys listed here are accepted; a typo is an error, not a silently
ignored option.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import InputError

_TOP_KEYS = {"protocol", "schemes", "technique", "beams", "select_beams", "grid_mm", "output", "cases",
             "allow_missing", "conditions", "qa", "tbi"}
_CASE_KEYS = {"name", "case", "rtstruct", "target", "targets", "protocol", "schemes", "technique", "beams",
              "select_beams", "grid_mm", "allow_missing", "conditions", "qa", "tbi"}


@dataclass(frozen=True)
class CohortTask:
    """One plan of the cohort: one case with one scheme."""

    case_name: str
    case_spec: str
    scheme: str
    protocol: str
    technique: str = "imrt"
    rtstruct: str | None = None
    target: str | None = None
    n_beams: int | None = None
    grid_mm: float = 2.0
    allow_missing: bool = False
    conditions: tuple[str, ...] = ()
    select_beams: bool = True
    #: several targets in one plan, each with its prescription (``workflow.targets``); ``scheme`` is
    #: then the highest one's
    targets: tuple = ()
    #: patient-specific QA options (``sbrtplan.qa.cohort_qa_options``; ``()``: no QA)
    qa: tuple = ()
    #: TBI options of a ``technique: tbi`` task (``sbrtplan.tbi.cohort_tbi_options``)
    tbi: tuple = ()

    @property
    def key(self) -> str:
        """Folder name of this task's outputs (``patient01/27-3``; ``patient03/PTV1_27-3+PTV2_24-3``)."""
        if self.targets:
            return f"{self.case_name}/" + "+".join(f"{t.name}_{t.scheme.short.replace('/', '-')}"
                                                   for t in self.targets)
        return f"{self.case_name}/{self.scheme.replace('/', '-')}"


@dataclass
class Cohort:
    """A parsed cohort file."""

    path: Path
    output_dir: Path
    tasks: list[CohortTask] = field(default_factory=list)


def _resolve(base: Path, spec: str) -> str:
    if spec.startswith("phantom:"):
        return spec
    p = Path(spec)
    return str(p if p.is_absolute() else (base / p).resolve())


#: a case name becomes a folder of the output: one safe path component, nothing that climbs out of it
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\- ]{0,127}$")


def _check_case_name(name: str, where: str) -> None:
    if not _SAFE_NAME.match(name) or ".." in name:
        raise InputError(f"{where}: case name {name!r} is not a plain folder name; expected letters, digits, "
                         "'_', '-', '.', '+' or spaces (no '/', '..' or leading dot)")


def _check_values(merged: dict, where: str) -> None:
    """Types and ranges of a case's options (a typo in a value fails here, not in a worker)."""
    from .._limits import limit
    from ..protocols import Scheme

    tech = str(merged.get("technique", "imrt")).lower()
    if tech not in ("imrt", "vmat", "tbi"):
        raise InputError(f"{where}: technique {merged.get('technique')!r}; expected imrt, vmat or tbi")
    g = merged.get("grid_mm", 2.0)
    lo, hi = limit("options", "grid_mm")
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(float(g)) or not lo <= g <= hi:
        raise InputError(f"{where}: grid_mm {g!r}; expected a number from {lo:g} to {hi:g} mm")
    b = merged.get("beams")
    if b is not None:
        lo, hi = limit("options", "imrt_beams")
        if isinstance(b, bool) or not isinstance(b, int) or not lo <= b <= hi:
            raise InputError(f"{where}: beams {b!r}; expected a whole number from {lo} to {hi}")
        if tech == "vmat":
            raise InputError(f"{where}: beams {b} applies to IMRT; VMAT plans use the site's arcs")
    for key in ("select_beams", "allow_missing"):
        if key in merged and not isinstance(merged[key], bool):
            raise InputError(f"{where}: {key} {merged[key]!r}; expected true or false")
    conds = merged.get("conditions", ()) or ()
    if not isinstance(conds, (list, tuple)) or not all(isinstance(c, str) for c in conds):
        raise InputError(f"{where}: conditions {conds!r}; expected a list of names")
    schemes = merged.get("schemes")
    for sch in ([s.strip() for s in schemes.split(",")] if isinstance(schemes, str) else schemes or []):
        Scheme.parse(str(sch))  # TOTAL/FRACTIONS with a clear error of its own


def _job_options(doc: dict, entry: dict, where: str, base: Path) -> tuple[tuple, tuple]:
    """The ``qa`` and ``tbi`` options of a case: the case's mapping over the top level's, checked."""
    from ..qa import cohort_qa_options
    from ..tbi import cohort_tbi_options

    out = []
    for key, check in (("qa", cohort_qa_options), ("tbi", cohort_tbi_options)):
        top, case = doc.get(key), entry.get(key, doc.get(key))
        if isinstance(top, dict) and isinstance(case, dict):
            case = {**top, **case}
        out.append(check(case, where, base))
    tbi_task = str(entry.get("technique", doc.get("technique", "imrt"))).lower() == "tbi"
    if out[1] and not tbi_task:
        raise InputError(f"{where}: 'tbi' options need technique: tbi")
    if out[0] and tbi_task:
        raise InputError(f"{where}: 'qa' (verification on a QA phantom) applies to SBRT plans, not to TBI")
    return out[0], out[1]


def load_cohort(path: str | Path, output_dir: str | Path | None = None) -> Cohort:
    """Read and validate a cohort YAML file.

    Parameters
    ----------
    path : str or Path
    output_dir : str or Path, optional
        Overrides the file's ``output`` key.

    Returns
    -------
    Cohort
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"cohort file {path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise InputError(f"cohort file {path}: not valid YAML ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list) or not doc["cases"]:
        raise InputError(f"cohort file {path}: expected a mapping with a non-empty 'cases' list")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise InputError(f"cohort file {path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    base = path.parent.resolve()
    out = Path(output_dir) if output_dir is not None else base / str(doc.get("output", "cohort-out"))
    tasks: list[CohortTask] = []
    names: set[str] = set()
    for i, entry in enumerate(doc["cases"]):
        where = f"cohort file {path}, case #{i + 1}"
        if not isinstance(entry, dict) or "case" not in entry:
            raise InputError(f"{where}: expected a mapping with at least 'case'")
        bad = set(entry) - _CASE_KEYS
        if bad:
            raise InputError(f"{where}: unknown key(s) {sorted(bad)}; allowed: {sorted(_CASE_KEYS)}")
        merged = {k: v for k, v in doc.items() if k not in ("cases", "output")}
        merged.update(entry)
        name = str(entry.get("name") or Path(str(entry["case"])).stem.replace("phantom:", ""))
        _check_case_name(name, where)
        _check_values(merged, where)
        if name in names:
            raise InputError(f"{where}: duplicate case name '{name}'")
        names.add(name)
        qa, tbi = _job_options(doc, entry, where, base)
        if str(merged.get("technique", "imrt")).lower() == "tbi":
            merged.setdefault("protocol", "tbi")      # TBI follows the TBI rules, not an SBRT protocol
        if "protocol" not in merged:
            raise InputError(f"{where}: no protocol (give 'protocol' at the top or for the case)")
        schemes = merged.get("schemes")
        targets = ()
        if "targets" in entry:
            from ..workflow.targets import targets_from_yaml

            if "schemes" in entry or "target" in entry:
                raise InputError(f"{where}: 'targets' carries the prescriptions; give no 'schemes' or 'target' with it")
            targets = targets_from_yaml(entry["targets"], f"{where}, targets")
            schemes = [max(targets, key=lambda t: t.dose_gy).scheme.short]
        if isinstance(schemes, str):
            schemes = [s.strip() for s in schemes.split(",")]
        if not schemes:
            raise InputError(f"{where}: no fractionation scheme (give 'schemes', e.g. [27/3])")
        for scheme in schemes:
            tasks.append(CohortTask(
                case_name=name, case_spec=_resolve(base, str(merged["case"])), scheme=str(scheme),
                protocol=str(merged["protocol"]), technique=str(merged.get("technique", "imrt")).lower(),
                rtstruct=_resolve(base, str(merged["rtstruct"])) if merged.get("rtstruct") else None,
                target=merged.get("target"), n_beams=merged.get("beams"),
                grid_mm=float(merged.get("grid_mm", 2.0)), allow_missing=bool(merged.get("allow_missing", False)),
                conditions=tuple(merged.get("conditions", ()) or ()),
                select_beams=bool(merged.get("select_beams", True)), targets=targets, qa=qa, tbi=tbi))
    return Cohort(path=path, output_dir=out, tasks=tasks)
