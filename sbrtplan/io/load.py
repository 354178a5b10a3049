"""One entry point for every case source: ``load_case(spec)``."""

from __future__ import annotations

from pathlib import Path

from .._log import Timings, get_logger, timed
from ..case import Case
from ..errors import InputError, SbrtplanError
from .body import body_outline
from .dicom_ct import _has_dicm_magic, read_ct_series, read_header, scan_folder, select_ct_series
from .rtstruct import read_rtstruct

log = get_logger(__name__)


def _is_openkbp(d: Path) -> bool:
    return (d / "ct.csv").is_file() and (d / "voxel_dimensions.csv").is_file()


def _pick_rtstruct(folder, case: Case) -> Path | None:
    """The RTSTRUCT of the folder that refers to the CT's frame of reference."""
    items = folder.rtstruct
    if not items:
        return None
    for_uid = case.patient.frame_of_reference_uid
    matching = []
    for p, ds in items:
        uids = {str(it.get("ReferencedFrameOfReferenceUID", "")) for it in ds.get("StructureSetROISequence", []) or []}
        uids |= {str(it.get("FrameOfReferenceUID", "")) for it in ds.get("ReferencedFrameOfReferenceSequence", []) or []}
        if for_uid is None or for_uid in uids:
            matching.append(p)
    if not matching:
        names = ", ".join(p.name for p, _ in items)
        raise InputError(f"{folder.directory}: RTSTRUCT file(s) {names} refer to another frame of reference than "
                         f"the CT ({for_uid}); give the right one with rtstruct=")
    if len(matching) > 1:
        raise InputError(f"{folder.directory}: {len(matching)} RTSTRUCT files ({', '.join(p.name for p in matching)}); "
                         "choose one with rtstruct=")
    return matching[0]


def load_dicom_case(directory: str | Path, rtstruct: str | Path | None = None, series_uid: str | None = None,
                    add_body: bool = True, timings: Timings | None = None) -> Case:
    """CT series + RTSTRUCT (found in the folder or given) + automatic body when none.

    The RTDOSE files of the folder that share the CT's frame of reference are
    attached as ``case.doses`` (on their own grids).
    """
    d = Path(directory)
    folder = scan_folder(d)
    uid, _ = select_ct_series(folder, series_uid)
    case = read_ct_series(d, uid, folder=folder, timings=timings)
    rs_path = Path(rtstruct) if rtstruct is not None else _pick_rtstruct(folder, case)
    if rs_path is not None:
        for s in read_rtstruct(rs_path, case, timings=timings):
            case.add_structure(s)
        case.metadata["rtstruct"] = str(rs_path)
    else:
        log.warning("%s: no RTSTRUCT; the case has no contoured structures", d)
    if add_body and case.body is None:
        case.add_structure(body_outline(case, timings=timings))
    if folder.rtdose:
        from .rtdose import read_rtdose

        for p, ds in folder.rtdose:
            if str(ds.get("FrameOfReferenceUID", "")) not in ("", case.patient.frame_of_reference_uid or ""):
                log.warning("%s: RTDOSE in another frame of reference; not attached", p)
                continue
            try:
                dose = read_rtdose(p)
            except SbrtplanError as exc:
                log.warning("%s", exc)
                continue
            case.doses[dose.description or p.stem] = dose
    return case


def load_case(spec: str | Path, rtstruct: str | Path | None = None, *, timings: Timings | None = None) -> Case:
    """Load a case from any supported source.

    Parameters
    ----------
    spec : str or Path
        ``"phantom:NAME"`` (built-in phantom), a DICOM folder (CT series and
        its RTSTRUCT, found inside or given by ``rtstruct``; a CT slice or
        RTSTRUCT file stands for its folder), a matRad
        ``.mat`` file or an OpenKBP patient folder (``ct.csv``,
        ``voxel_dimensions.csv``, ...).
    rtstruct : path, optional
        RTSTRUCT file for a DICOM folder holding none or several.

    Returns
    -------
    Case
        With an ``External`` structure (the automatic body outline when the
        source has none, for DICOM).
    """
    text = str(spec)
    if text.lower().startswith("phantom:"):
        from ..phantoms import make_phantom  # phantoms sit beside io, on top of case

        return make_phantom(text.split(":", 1)[1])
    p = Path(text)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder; expected a DICOM folder, a matRad .mat file, "
                         "an OpenKBP patient folder or phantom:NAME")
    with timed(f"load case {p.name}", log, timings):
        if p.is_file():
            if p.suffix.lower() == ".mat":
                from scipy.io.matlab import MatReadError

                from .matrad_io import read_matrad

                try:
                    return read_matrad(p)
                except (MatReadError, ValueError, OSError, EOFError, KeyError) as exc:  # empty, text, truncated
                    raise InputError(f"{p}: not a readable matRad .mat file ({type(exc).__name__}: "
                                     f"{' '.join(str(exc).split())[:200]})") from None
            if _has_dicm_magic(p):  # a file of a DICOM folder: load the folder around it
                ds = read_header(p)
                modality = str(ds.get("Modality", "")).upper()
                if modality == "RTSTRUCT":
                    return load_dicom_case(p.parent, rtstruct=rtstruct or p, timings=timings)
                if modality == "CT":
                    return load_dicom_case(p.parent, rtstruct=rtstruct, series_uid=str(ds.get("SeriesInstanceUID")),
                                           timings=timings)
                raise InputError(f"{p}: a DICOM {modality or 'file'}; expected a CT slice, an RTSTRUCT or their folder")
            raise InputError(f"{p}: unsupported file type '{p.suffix}'; expected a matRad .mat file or a folder")
        if _is_openkbp(p):
            from .openkbp import read_openkbp

            if rtstruct is not None:
                raise InputError(f"{p}: an OpenKBP folder takes no rtstruct")
            return read_openkbp(p)
        return load_dicom_case(p, rtstruct=rtstruct, timings=timings)
