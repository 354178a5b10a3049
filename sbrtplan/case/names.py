"""AAPM TG-263 structure-name normalisation and role inference.

Names in source files vary (``cord``, ``SPINALCORD``, ``Spinal Cord``,
``lt lung``).  :func:`normalize_name` maps them to TG-263 names through an
alias table keyed on a simplified form of the name (lower case, letters and
digits only, left/right words turned into ``l``/``r`` suffixes).  Target names
(GTV/CTV/ITV/PTV with dose or index suffixes) keep their suffix.  Unknown names
are returned unchanged: a name the table does not know is never guessed (nor is
the side of a paired organ named without one).  The table covers the organs of
SBRT protocols in the thorax, abdomen and pelvis and the common head-and-neck
organs (parotids, submandibular glands, mandible, larynx, constrictors, eyes,
lenses, cochleae, ...), with TG-263 spellings (``Glnd_*``, ``Bone_*``,
``A_*``/``V_*`` vessels, ``_L``/``_R`` sides).
"""

from __future__ import annotations

import re

from .structure import StructureRole

def _lateral(side: str, *keys: str) -> tuple[str, ...]:
    """Simplified aliases of a paired organ on ``side`` ('l' or 'r'): the side after the organ
    ("parotid lt" -> "parotidl") or glued in front of it or spelt out ("LParotid", "LeftParotid")."""
    words = ("l", "left", "lt") if side == "l" else ("r", "right", "rt")
    return tuple(dict.fromkeys([k + side for k in keys] + [w + k for k in keys for w in words]
                               + [k + w for k in keys for w in words[1:]]))


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
    "Couch": ("couch", "table", "tabletop"),
    "CouchSurface": ("couchsurface", "couchouter", "couchshell"),
    "CouchInterior": ("couchinterior", "couchinner", "couchcore"),
    # Added for the built-in phantoms and common SBRT structure sets.
    "Bone": ("bone", "bones", "skeleton"),
    "Bowel": ("bowel", "bowelbag", "bowelspace", "bowelcavity"),
    "Brain": ("brain",),
    "Carina": ("carina",),
    "OpticChiasm": ("opticchiasm", "chiasm", "chiasma", "opticchiasma"),
    "Femur_Head_L": ("femurheadl", "femoralheadl", "lfemoralhead", "leftfemoralhead"),
    "Femur_Head_R": ("femurheadr", "femoralheadr", "rfemoralhead", "rightfemoralhead"),
    "Gallbladder": ("gallbladder", "gb"),
    "Larynx": ("larynx",),
    "Liver-GTV": ("livergtv", "livergtvs", "normalliver", "liverminusgtv", "livernormal"),
    "OpticNrv_L": ("opticnrvl", "opticnervel", "lopticnerve", "leftopticnerve"),
    "OpticNrv_R": ("opticnrvr", "opticnerver", "ropticnerve", "rightopticnerve"),
    "Penis": ("penis",),
    "Prostate": ("prostate",),
    "Ribs_L": ("ribsl", "ribl", "lrib", "lribs", "leftribs", "leftrib"),
    "Ribs_R": ("ribsr", "ribr", "rrib", "rribs", "rightribs", "rightrib"),
    "Stomach_Duodenum": ("stomachduodenum",),
    "Trachea_Bronchus": ("tracheabronchus",),
    "VB": ("vb", "vertebralbody", "vertebralbodies", "vertebra", "vertebrae"),
    # Head and neck.
    "Bone_Mandible": ("bonemandible", "mandible", "mandibula", "mandibularbone", "jaw"),
    "Larynx_Glottic": ("larynxglottic", "glotticlarynx", "glottis", "glottic"),
    "Larynx_SG": ("larynxsg", "supraglotticlarynx", "larynxsupraglottic", "supraglottis", "supraglottic"),
    "Musc_Constrict": ("muscconstrict", "constrictors", "constrictor", "pharyngealconstrictors",
                       "pharynxconstrictors", "constrictormuscles", "pcm"),
    "Musc_Constrict_S": ("muscconstricts", "superiorconstrictor", "constrictorsuperior", "spcm", "supcm"),
    "Musc_Constrict_M": ("muscconstrictm", "middleconstrictor", "constrictormiddle", "mpcm", "midpcm"),
    "Musc_Constrict_I": ("muscconstricti", "inferiorconstrictor", "constrictorinferior", "ipcm", "infpcm"),
    "Cavity_Oral": ("cavityoral", "oralcavity", "mouth", "oralcav"),
    "Lips": ("lips", "lip"),
    "Glnd_Thyroid": ("glndthyroid", "thyroid", "thyroidgland", "glandthyroid"),
    "Pituitary": ("pituitary", "pituitarygland", "hypophysis"),
    "Cerebellum": ("cerebellum",),
    "Parotids": ("parotids", "bothparotids", "parotidstotal", "parotidsboth"),
    "Glnd_Submands": ("glndsubmands", "submandibulars", "submandibularglands", "bothsubmandibulars"),
    **{f"{organ}_{side.upper()}": _lateral(side, *keys) for side in "lr" for organ, keys in (
        ("Parotid", ("parotid", "parotidgland", "glndparotid")),
        ("Glnd_Submand", ("glndsubmand", "submandibular", "submandibulargland", "submand", "smg")),
        ("Glnd_Lacrimal", ("glndlacrimal", "lacrimal", "lacrimalgland")),
        ("Eye", ("eye", "globe", "eyeball")),
        ("Lens", ("lens",)),
        ("Retina", ("retina",)),
        ("Cochlea", ("cochlea",)),
        ("Hippocampus", ("hippocampus", "hippo")),
        ("Lobe_Temporal", ("lobetemporal", "temporallobe")),
        ("Joint_TM", ("jointtm", "tmj", "temporomandibularjoint")),
        # thorax and abdomen
        ("Breast", ("breast",)),
        ("Bronchus_Main", ("bronchusmain", "mainbronchus", "mainstembronchus")),
        ("Glnd_Adrenal", ("glndadrenal", "adrenal", "adrenalgland")),
        ("Ureter", ("ureter",)),
    )},
    # Thorax, abdomen and pelvis.
    "A_Pulmonary": ("apulmonary", "pulmonaryartery", "pulmonaryarteries", "pulmonarytrunk"),
    "V_Venacava_S": ("vvenacavas", "svc", "superiorvenacava", "venacavasuperior", "venacavasup"),
    "V_Venacava_I": ("vvenacavai", "ivc", "inferiorvenacava", "venacavainferior", "venacavainf"),
    "Breasts": ("breasts", "bothbreasts"),
    "Colon_Sigmoid": ("colonsigmoid", "sigmoid", "sigmoidcolon"),
    "Urethra": ("urethra",),
    "PenileBulb": ("penilebulb", "bulbpenis", "penisbulb", "bulbofpenis"),
    "Sacrum": ("sacrum",),
}

_LOOKUP: dict[str, str] = {}
for _canon, _alist in _ALIASES.items():
    for _a in _alist + (_canon.lower().replace("_", ""),):
        _LOOKUP.setdefault(_a, _canon)

_LEFT = re.compile(r"\b(left|lt|lft|l)\b")
_RIGHT = re.compile(r"\b(right|rt|r)\b")
_TARGET = re.compile(r"^\s*(gtv|ctv|itv|ptv)(.*)$", re.IGNORECASE)
# "<organ> - <target>" (e.g. "heart-ptv", "Lungs-GTV", "liver minus gtv").
_MINUS_TARGET = re.compile(r"^(.*?\S)\s*(?:-|\bminus\b)\s*((?:gtv|ctv|itv|ptv)\w*)\s*$", re.IGNORECASE)
# One "PRV" token, optionally glued to its margin ("PRV05", "prv5mm", "PRV 3 mm", "PRV_2").
_PRV_TOKEN = re.compile(r"(?:^|(?<=[\s_\-+]))prv(?:[\s_\-]*(\d+(?:\.\d+)?)\s*(?:mm)?)?(?=$|[\s_\-+])",
                        re.IGNORECASE)


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


def _format_margin(text: str | None) -> str:
    """TG-263 PRV margin suffix: two-digit mm ("05"), as written when fractional."""
    if not text:
        return ""
    value = float(text)
    return f"{int(value):02d}" if value == int(value) else f"{value:g}"


def normalize_name(name: str) -> str:
    """TG-263 name for ``name`` (unchanged when the alias table does not know it).

    Examples
    --------
    >>> normalize_name("SPINALCORD"), normalize_name("lt lung"), normalize_name("ptv_41.4")
    ('SpinalCord', 'Lung_L', 'PTV_41.4')

    PRVs keep their margin in mm on two digits, and "organ minus target"
    structures are written the TG-263 way:

    >>> normalize_name("prv cord"), normalize_name("cord PRV 5mm"), normalize_name("heart-ptv")
    ('SpinalCord_PRV', 'SpinalCord_PRV05', 'Heart-PTV')
    """
    m = _TARGET.match(name)
    if m:
        rest = m.group(2).strip()
        sep = "_" if re.match(r"^[\s_\-]", m.group(2)) else ""
        return m.group(1).upper() + sep + re.sub(r"^[\s_\-]+", "", rest)
    prv = _PRV_TOKEN.search(name)
    if prv:
        organ = (name[:prv.start()] + " " + name[prv.end():]).strip(" _-+")
        margin = prv.group(1)
        if margin is None:  # "PRV cord 3mm": the margin written after the organ
            mm = re.search(r"[\s_\-+]*(\d+(?:\.\d+)?)\s*mm$", organ, re.IGNORECASE)
            if mm:
                margin, organ = mm.group(1), organ[:mm.start()].strip(" _-+")
        canon = normalize_name(organ) if organ else ""
        if canon in _ALIASES:
            return canon + "_PRV" + _format_margin(margin)
    minus = _MINUS_TARGET.match(name)
    if minus:
        canon = normalize_name(minus.group(1))
        if canon in _ALIASES:
            return canon + "-" + normalize_name(minus.group(2))
    key = _simplify(name)
    if key in _LOOKUP:
        return _LOOKUP[key]
    # "lung l" style already handled; try without trailing digits ("cord1")
    stripped = re.sub(r"\d+$", "", key)
    return _LOOKUP.get(stripped, name.strip())


#: Words that make a target-like name a planning helper (rings, walls, boolean combinations, optimisation
#: copies): such a structure is never a target unless its RTROIInterpretedType says so.
_HELPER_WORDS = frozenset({"RING", "RINGS", "WALL", "SHELL", "AND", "OR", "NOT", "XOR", "MINUS", "PLUS", "UNION",
                           "OPT", "OPTI", "OPTIM", "AVOID", "HELP", "HELPER", "TMP", "TEMP", "DUMMY", "EXPAND",
                           "EXP", "SUB", "SUBTRACT", "BOOL", "NS", "OVERLAP"})
_BOOLEAN_OP = re.compile(r"[+&|]|\s-\s|-\s*[A-Za-z]")

#: RTROIInterpretedType -> role (DICOM PS3.3 C.8.8.8: the types a structure set declares).
_DICOM_ROLES = {
    "EXTERNAL": StructureRole.EXTERNAL, "PTV": StructureRole.PTV, "CTV": StructureRole.CTV,
    "GTV": StructureRole.GTV, "ORGAN": StructureRole.OAR, "AVOIDANCE": StructureRole.OAR,
    "TREATED_VOLUME": StructureRole.CONTROL, "IRRAD_VOLUME": StructureRole.CONTROL,
    "CONTROL": StructureRole.CONTROL, "DOSE_REGION": StructureRole.CONTROL, "CAVITY": StructureRole.OTHER,
    "CONTRAST_AGENT": StructureRole.OTHER, "BOLUS": StructureRole.SUPPORT, "SUPPORT": StructureRole.SUPPORT,
    "FIXATION": StructureRole.SUPPORT, "MARKER": StructureRole.OTHER, "ISOCENTER": StructureRole.OTHER,
    "REGISTRATION": StructureRole.OTHER, "BRACHY_CHANNEL": StructureRole.OTHER,
    "BRACHY_ACCESSORY": StructureRole.OTHER, "BRACHY_SRC_APP": StructureRole.OTHER,
    "BRACHY_CHNL_SHLD": StructureRole.OTHER,
}


def is_helper_name(name: str) -> bool:
    """True for ring, wall and boolean helper names (``PTV1_WALL``, ``PTV 1 AND 2``, ``PTV-Cord``, ``zPTV``).

    >>> is_helper_name("PTV1_WALL"), is_helper_name("PTV 1 AND 2"), is_helper_name("PTV_27Gy")
    (True, True, False)
    """
    n = name.strip()
    spaced = re.sub(r"^([GCIP]TV)", r"\1 ", re.sub(r"([a-z])([A-Z])", r"\1 \2", n), flags=re.IGNORECASE)
    words = {w for w in re.split(r"[^A-Za-z]+", spaced.upper()) if w}
    return bool(words & _HELPER_WORDS) or bool(_BOOLEAN_OP.search(n)) or n.upper().endswith("!")


def infer_role(name: str, dicom_type: str | None = None) -> StructureRole:
    """Planning role: the RTROIInterpretedType first, name patterns only when it is empty.

    A typed PTV/CTV/GTV is a target whatever its name (a CTV-typed ``ITV...`` is an
    ITV); a typed ORGAN or AVOIDANCE is an organ at risk (a PRV when its name says
    so), never a target, even when named ``PTVn_WALL``.  Without a type, a name
    starting with GTV/CTV/ITV/PTV is a target unless it names a helper
    (:func:`is_helper_name`: rings, walls, boolean combinations), which is a
    CONTROL structure.
    """
    t = (dicom_type or "").strip().upper()
    n = name.strip().upper()
    if t in _DICOM_ROLES:
        role = _DICOM_ROLES[t]
        if role.is_target and n.startswith("ITV"):
            return StructureRole.ITV
        if role is StructureRole.OAR and "PRV" in n:
            return StructureRole.PRV
        return role
    # no (or an unknown) type: the name decides
    if n.endswith("!"):  # optimisation-only copies such as the spine "PTV!"
        return StructureRole.CONTROL
    for prefix in ("GTV", "CTV", "ITV", "PTV"):
        if n.startswith(prefix):
            return StructureRole.CONTROL if is_helper_name(name) else StructureRole[prefix]
    if "PRV" in n:
        return StructureRole.PRV
    if name == "External":
        return StructureRole.EXTERNAL
    if name.startswith("Couch"):
        return StructureRole.SUPPORT
    if name in _ALIASES or name.split("-", 1)[0] in _ALIASES:
        return StructureRole.OAR
    if n.startswith("Z") or n.startswith("RING") or is_helper_name(name):
        return StructureRole.CONTROL
    return StructureRole.OTHER
