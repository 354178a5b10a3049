"""AAPM TG-263 structure-name normalisation and role inference.

Names in source files vary (``cord``, ``SPINALCORD``, ``Spinal Cord``,
``lt lung``).  :func:`normalize_name` maps them to TG-263 names through an
alias table keyed on a simplified form of the name (lower case, letters and
digits only, left/right words turned into ``l``/``r`` suffixes).  Target names
(GTV/CTV/ITV/PTV with dose or index suffixes) keep their suffix.  Unknown names
are returned unchanged: a name the table does not know is never guessed.
"""

from __future__ import annotations

import re

from .structure import StructureRole

# TG-263 name -> aliases (already in simplified form: lower-case alphanumerics,
# laterality moved to a trailing 'l' / 'r').
_ALIASES: dict[str, tuple[str, ...]] = {
    "External": ("external", "body", "outline", "skinoutline", "patient", "bodyoutline", "ext"),
    "SpinalCord": ("spinalcord", "cord", "spinalcord", "myelon", "medulla", "cordspinal", "spcord", "sc"),
    "SpinalCanal": ("spinalcanal", "canal", "canalspinal", "thecalsac", "spinalcanalthecal"),
    "CaudaEquina": ("caudaequina", "cauda"),
    "Brainstem": ("brainstem", "brainstemnotmedulla"),
    "Esophagus": ("esophagus", "oesophagus", "eso", "oeso"),
    "Trachea": ("trachea",),
    "Bronchus": ("bronchus", "bronchi", "proximalbronchialtree", "pbt", "bronchialtree"),
    "Heart": ("heart", "pericardium", "heartpericardium"),
    "GreatVes": ("greatves", "greatvessels", "greatvessel", "aorta"),
    "Lungs": ("lungs", "lungtotal", "totallung", "lung", "bothlungs", "lungsgtv", "restcommonlung", "commonlung"),
    "Lung_L": ("lungl", "llung", "leftlung", "lunglt", "ltlung", "lunglft"),
    "Lung_R": ("lungr", "rlung", "rightlung", "lungrt", "rtlung"),
    "Liver": ("liver",),
    "Stomach": ("stomach",),
    "Duodenum": ("duodenum", "duod"),
    "Bowel_Small": ("bowelsmall", "smallbowel", "smallintestine", "jejunumileum", "jejunum", "ileum"),
    "Bowel_Large": ("bowellarge", "largebowel", "colon", "largeintestine"),
    "Kidney_L": ("kidneyl", "lkidney", "leftkidney", "kidneylt", "ltkidney"),
    "Kidney_R": ("kidneyr", "rkidney", "rightkidney", "kidneyrt", "rtkidney"),
    "Kidneys": ("kidneys", "kidney", "bothkidneys"),
    "Rib": ("rib", "ribs", "chestwall", "chestwallribs"),
    "Skin": ("skin",),
    "BrachialPlex_L": ("brachialplexl", "lbrachialplexus", "brachialplexusl", "leftbrachialplexus"),
    "BrachialPlex_R": ("brachialplexr", "rbrachialplexus", "brachialplexusr", "rightbrachialplexus"),
    "SacralPlex": ("sacralplex", "sacralplexus", "lumbosacralplexus"),
    "BileDuct_Common": ("bileductcommon", "commonbileduct", "cbd"),
    "Bladder": ("bladder", "urinarybladder"),
    "Rectum": ("rectum",),
    "Pancreas": ("pancreas",),
    "Spleen": ("spleen",),
    "Couch": ("couch", "couchsurface", "couchinterior", "table", "tabletop"),
}

_LOOKUP: dict[str, str] = {}
for _canon, _alist in _ALIASES.items():
    for _a in _alist + (_canon.lower().replace("_", ""),):
        _LOOKUP.setdefault(_a, _canon)

_LEFT = re.compile(r"\b(left|lt|lft|l)\b")
_RIGHT = re.compile(r"\b(right|rt|r)\b")
_TARGET = re.compile(r"^\s*(gtv|ctv|itv|ptv)(.*)$", re.IGNORECASE)


def _simplify(name: str) -> str:
    s = name.strip().lower().replace("_", " ").replace("-", " ")
    side = ""
    if _LEFT.search(s):
        side = "l"
        s = _LEFT.sub(" ", s)
    elif _RIGHT.search(s):
        side = "r"
        s = _RIGHT.sub(" ", s)
    return re.sub(r"[^a-z0-9]", "", s) + side


def normalize_name(name: str) -> str:
    """TG-263 name for ``name`` (unchanged when the alias table does not know it).

    Examples
    --------
    >>> normalize_name("SPINALCORD"), normalize_name("lt lung"), normalize_name("ptv_41.4")
    ('SpinalCord', 'Lung_L', 'PTV_41.4')
    """
    m = _TARGET.match(name)
    if m:
        rest = m.group(2).strip()
        sep = "_" if re.match(r"^[\s_\-]", m.group(2)) else ""
        return m.group(1).upper() + sep + re.sub(r"^[\s_\-]+", "", rest)
    key = _simplify(name)
    if key in _LOOKUP:
        return _LOOKUP[key]
    # "lung l" style already handled; try without trailing digits ("cord1")
    stripped = re.sub(r"\d+$", "", key)
    return _LOOKUP.get(stripped, name.strip())


def infer_role(name: str, dicom_type: str | None = None) -> StructureRole:
    """Planning role from a (normalised) name and an optional RTROIInterpretedType."""
    t = (dicom_type or "").strip().upper()
    if t == "EXTERNAL":
        return StructureRole.EXTERNAL
    n = name.strip().upper()
    for prefix in ("GTV", "CTV", "ITV", "PTV"):
        if n.startswith(prefix):
            return StructureRole[prefix]
    if "PRV" in n:
        return StructureRole.PRV
    if name == "External":
        return StructureRole.EXTERNAL
    if name == "Couch" or t in ("SUPPORT", "FIXATION"):
        return StructureRole.SUPPORT
    if t in ("GTV", "CTV", "PTV"):
        return StructureRole[t]
    if t in ("ORGAN", "AVOIDANCE") or name in _ALIASES:
        return StructureRole.OAR
    if t == "CONTROL" or n.startswith("Z") or n.startswith("RING"):
        return StructureRole.CONTROL
    return StructureRole.OTHER
