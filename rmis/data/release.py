"""Metadata of the 13 fault-diagnosis datasets in the layout of the official RMIS release.

The official preprocessed release (one folder per dataset under the data root, one mono 16-bit
PCM file per sensor channel) is read by file NAME only: audio is never opened here. Label, group
(the sealing unit of the sealed splits) and, for IIEE, the official split of a file follow from
its path relative to the dataset folder, with the rules of PROTOCOL.md section 1, declared once
per dataset in :data:`RELEASE_RULES` so that a reader can audit them next to the protocol:

==============  ==============================================  ===============================
dataset         label                                           group (sealing unit)
==============  ==============================================  ===============================
iica            ``<leak>_leak`` if the 2nd ``_`` token is       folder path + name without its
                ``niO``, else ``<leak>_noleak``                 last ``_`` token
iiee            2nd ``_`` token of the class folder             the uncut recording
                                                                (informational: IIEE uses its
                                                                official split, the folder)
wtpg            the class the name starts with                  name without its last two
                                                                ``_`` tokens
mafaulda_*      the class the name starts with                  the file itself
sdust_bearing   the class the name starts with                  name without ``_ch0_<i>``
sdust_gear      the class found anywhere in the name            name without ``_ch0_<i>``
umged_*         the ``E<ee>`` token of the name                 name without ``_ch0_<i>``
pu_*            the class the name starts with                  name without its last two
                                                                ``_`` tokens
==============  ==============================================  ===============================

Decisions beyond the official harness (``runner/meta_data/rmis.py`` of the RMIS repository):

* A file that matches no rule is a problem naming the file and the reason; :func:`fd_table`
  raises on any problem. The official harness silently reuses the previous file's label.
* Channel filters. The official preprocessing writes each dataset's channels into that dataset's
  own folder (``--dataset sound|vibration|voltage|current`` of the MaFaulDa, UMGED and PU
  scripts), and the official harness reads every file of the folder. A released folder therefore
  never holds another dataset's channel; one found there means a mixed-up folder (e.g. UMGED
  vibration files copied into ``umged_sound``). Dropping it silently would hide that, keeping it
  would mix modalities: it is a problem naming the dataset the channel belongs to.
* Flat datasets (all but IICA and IIEE) must have their files directly in the dataset folder; a
  file in a subfolder is a problem (the official harness reads subfolders for some datasets and
  not for others).
* Ignored, never scored: hidden entries (names starting with ``.``), files without the dataset's
  audio suffix (``.wav``, FLAC for WTPG), WTPG files whose name contains ``keyphase`` (as the
  official harness does), and IIEE's uncut ``train/`` and ``test/`` folders.
* Labels must be spelled exactly as the spec's class list (``rmis.data.specs``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from rmis.data.specs import DATASETS, FD_DATASETS, closest
from rmis.errors import RMISError

#: Columns of :func:`fd_table`, in order (``split`` only for datasets with an official split).
COLUMNS = ("file", "label", "group", "path")

_SHOWN = 5  # offending files quoted in one error message

LabelKind = Literal["template", "prefix", "anywhere", "token"]


@dataclass(frozen=True)
class LabelRule:
    """How the class label of a released file is derived from its name.

    Kinds:
        ``template``: ``template`` filled with named groups of the file pattern, each value first
            mapped through ``values[group]`` when given (an unmapped value is a problem).
        ``prefix``: the class the file name starts with, followed by ``_`` (the longest such
            class when several would fit).
        ``anywhere``: the class found anywhere in the file name. Longer class names claim their
            text first, so a shorter class name inside a longer one is never matched by accident;
            a name holding no class, or two different classes, is a problem.
        ``token``: the ``_``-delimited tokens of the file name that match ``token``; they must all
            be equal (a name may repeat its token).

    The file name is the last path component without the audio suffix; the label must be one of
    the spec's classes.
    """

    kind: LabelKind
    template: str = ""
    values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    token: str = ""


@dataclass(frozen=True)
class ReleaseRule:
    """Layout and file-name rules of one fault-diagnosis dataset of the official release.

    Attributes:
        suffix: audio suffix of released files (case-sensitive, as the official glob).
        layout: ``flat`` (files directly in the dataset folder) or ``tree`` (sub-folders, spelled
            out by ``pattern``).
        pattern: full-match regular expression over the file's path relative to the dataset
            folder (``/`` separators) without ``suffix``. Named groups: ``group`` (the sealing
            unit, required), ``channel`` (sensor channel, where ``channels`` is set), ``split``
            (official split folder) and whatever the label rule uses.
        pattern_doc: ``pattern`` in words, quoted in problems.
        label: how the label follows from the name.
        channels: sensor channels that belong to this dataset (None: no channel in the name).
        split_dirs: value of the ``split`` group -> ``train``/``test`` (official split datasets).
        ignored_dirs: top-level folders that are never read.
        ignored_substrings: files whose name contains one of these are never read.
        doc: the rule in words, as in PROTOCOL.md section 1.
    """

    suffix: str
    layout: Literal["flat", "tree"]
    pattern: re.Pattern[str]
    pattern_doc: str
    label: LabelRule
    channels: tuple[str, ...] | None = None
    split_dirs: Mapping[str, str] | None = None
    ignored_dirs: tuple[str, ...] = ()
    ignored_substrings: tuple[str, ...] = ()
    doc: str = ""


# Patterns shared by several datasets. ``[^/]+`` keeps flat names free of folders.
_CUT_PIECE = re.compile(r"(?P<group>[^/]+_channel(?P<channel>\d+))_ch0_\d+")
_STARTS_WITH = LabelRule("prefix")

_MAFAULDA = dict(
    suffix=".wav",
    layout="flat",
    pattern=re.compile(r"(?P<group>[^/]+_channel(?P<channel>\d+))"),
    pattern_doc="<class path with / as _>_<rotation frequency>_channel<c>",
    label=_STARTS_WITH,
)
_MAFAULDA_DOC = (
    "flat <class path with / as _>_<rotfreq>_channel<c>.wav, c = {channels}; names contain a '.' "
    "(e.g. normal_12.288_channel8.wav). Label: the class the name starts with (10 classes). "
    "Group: the file itself (one channel of one 5-s recording)."
)
_UMGED = dict(
    suffix=".wav",
    layout="flat",
    pattern=_CUT_PIECE,
    pattern_doc="G<g>_E<ee>_T<t>_N<nnn>_G<g>_E<ee>_T<t>_S<rpm>_channel<nn>_ch0_<i>",
    label=LabelRule("token", token=r"E\d\d"),
)
_UMGED_DOC = (
    "flat G<g>_E<ee>_T<t>_N<nnn>_G<g>_E<ee>_T<t>_S<rpm>_channel<nn>_ch0_<i>.wav, channels "
    "{channels} ({modality}; 06 sound, 03-05 vibration, 07-08 voltage, 01-02 current). Label: "
    "the E<ee> token of the name (11 classes E00..E20; both occurrences must agree). Group: the "
    "name without _ch0_<i> (one channel of one recording)."
)
_PU = dict(
    suffix=".wav",
    layout="flat",
    pattern=re.compile(r"(?P<group>[^/]+)_\d+_channel(?P<channel>\d+)"),
    pattern_doc="<healthy|IR|OR>[_<artificial|lifetime>]_<bearing>_N<s>_M<t>_F<f>_<bearing>_<m>"
    "_channel<c>",
    label=_STARTS_WITH,
)
_PU_DOC = (
    "flat <healthy/IR/OR>_<artificial/lifetime>_<bearing>_N<s>_M<t>_F<f>_<bearing>_<m>"
    "_channel<c>.wav (healthy has no artificial/lifetime part), c = {channels}. Label: the class "
    "the name starts with. Group: the name without its last two _ tokens, i.e. bearing x working "
    "condition (all 20 measurements m{both})."
)

#: Release rules of the 13 fault-diagnosis datasets (PROTOCOL.md section 1).
RELEASE_RULES: dict[str, ReleaseRule] = {
    "iica": ReleaseRule(
        suffix=".wav",
        layout="tree",
        pattern=re.compile(
            r"(?P<group>(?P<leak>[^/]+)/[^/]+/[^/]+/"
            r"[^/_]+_(?P<status>[^/_]+)_[^/_]+_[^/_]+)_\d+"
        ),
        pattern_doc="<leak>/<noise>/<session>/<S>_<iO|niO>_<knob>_<mic>_<i>",
        label=LabelRule(
            "template",
            template="{leak}_{status}",
            values={"status": {"niO": "leak", "iO": "noleak"}},
        ),
        doc=(
            "tree <leak>/<noise>/<session>/<S>_<iO/niO>_<knob>_<mic>_<i>.wav (the raw name ends "
            "in _, the piece index is appended with no separator). Label: <leak>_leak if the "
            "2nd _ token is niO, <leak>_noleak if it is iO; leak in tubeleak, ventleak, ventlow. "
            "Group: folder path + name without its last _ token (one recording)."
        ),
    ),
    "iiee": ReleaseRule(
        suffix=".wav",
        layout="tree",
        pattern=re.compile(
            r"(?P<group>(?P<split>train_cut|test_cut)/engine\d+_(?P<label>[^/_]+)/[^/]+)_\d+"
        ),
        pattern_doc="{train_cut,test_cut}/engine<k>_<class>/<name>_<i>",
        label=LabelRule("template", template="{label}"),
        split_dirs={"train_cut": "train", "test_cut": "test"},
        ignored_dirs=("train", "test"),
        doc=(
            "tree {train_cut,test_cut}/{engine1_good,engine2_broken,engine3_heavyload}/"
            "<name>_<i>.wav; the uncut train/ and test/ are ignored. Label: the 2nd _ token of "
            "the class folder (good, broken, heavyload). Split: the top folder (train_cut -> "
            "train, test_cut -> test), one official run. Group: none is used for scoring; the "
            "table names the uncut recording (folder path + name without its last _ token)."
        ),
    ),
    "wtpg": ReleaseRule(
        suffix=".flac",
        layout="flat",
        pattern=_CUT_PIECE,
        pattern_doc="<class>_<k>_<X><k>_<speed>_channel<c>_ch0_<i>",
        label=_STARTS_WITH,
        channels=("1", "2"),
        ignored_substrings=("keyphase",),
        doc=(
            "flat <class>_<k>_<X><k>_<speed>_channel<1/2>_ch0_<i>.flac (FLAC); names containing "
            "'keyphase' are ignored (as the official harness does). Label: the class the name "
            "starts with. Group: the name without its last two _ tokens (recording x channel)."
        ),
    ),
    "mafaulda_sound": ReleaseRule(
        **_MAFAULDA, channels=("8",), doc=_MAFAULDA_DOC.format(channels="8 (microphone)")
    ),
    "mafaulda_vib": ReleaseRule(
        **_MAFAULDA,
        channels=("2", "3", "4", "5", "6", "7"),
        doc=_MAFAULDA_DOC.format(channels="2..7 (accelerometers)"),
    ),
    "sdust_bearing": ReleaseRule(
        suffix=".wav",
        layout="flat",
        pattern=_CUT_PIECE,
        pattern_doc="<cls>_<cls>_<rpm>_<load>[_<k>]_channel<c>_ch0_<i>",
        label=_STARTS_WITH,
        channels=("1", "2", "3", "4", "5", "6"),
        doc=(
            "flat <cls>_<cls>_<rpm>_<load>[_<k>]_channel<c>_ch0_<i>.wav, c = 1..6. Label: the "
            "class the name starts with. Group: the name without _ch0_<i> (one channel of one "
            "recording)."
        ),
    ),
    "sdust_gear": ReleaseRule(
        suffix=".wav",
        layout="flat",
        pattern=_CUT_PIECE,
        pattern_doc="<folder>_<name>_<rpm>_<load>_<k>_channel<c>_ch0_<i>",
        label=LabelRule("anywhere"),
        channels=("1", "2", "3", "4", "5", "6"),
        doc=(
            "flat <folder>_<name>_<rpm>_<load>_<k>_channel<c>_ch0_<i>.wav, c = 1..6. Label: the "
            "class name found ANYWHERE in the name (normal: 'normal', the NC folder's files; the "
            "dataset's own spelling planetray...); longer class names are matched first and a "
            "name holding two classes is a problem. Group: the name without _ch0_<i>."
        ),
    ),
    "umged_sound": ReleaseRule(
        **_UMGED, channels=("06",), doc=_UMGED_DOC.format(channels="06", modality="sound")
    ),
    "umged_vib": ReleaseRule(
        **_UMGED,
        channels=("03", "04", "05"),
        doc=_UMGED_DOC.format(channels="03-05", modality="vibration"),
    ),
    "umged_vol": ReleaseRule(
        **_UMGED, channels=("07", "08"), doc=_UMGED_DOC.format(channels="07-08", modality="voltage")
    ),
    "umged_cur": ReleaseRule(
        **_UMGED, channels=("01", "02"), doc=_UMGED_DOC.format(channels="01-02", modality="current")
    ),
    "pu_vib": ReleaseRule(**_PU, channels=("7",), doc=_PU_DOC.format(channels="7", both="")),
    "pu_cur": ReleaseRule(
        **_PU,
        channels=("2", "3"),
        doc=_PU_DOC.format(channels="2 and 3", both=" and both current phases together"),
    ),
}

_CHANNEL_OWNER: dict[str, dict[str, str]] = {}  # family prefix -> channel -> dataset
for _name, _rule in RELEASE_RULES.items():
    for _ch in _rule.channels or ():
        _CHANNEL_OWNER.setdefault(_name.split("_")[0], {})[_ch] = _name


_DCASE_LAYOUT = (
    "<data-root>/dcase<yy>/{dev_data,eval_data}/<machine>/{train,test}/*.wav (2021: "
    "source_test/ and target_test/ instead of test/; 2025 also supplemental/, never scored), "
    "16 kHz. Eval test clips are anonymised: their labels come from the per-year list "
    "eval_data_list_20<yy>.csv shipped with the RMIS repository (uni_detect/data/dcase_eval_gt/), "
    "passed with --dcase-gt DIR."
)
_RELEASE_NOTE = (
    "The RMIS authors host the preprocessed release (see the 'Data' section of "
    "https://github.com/jianganbai/RMIS); the official scripts under utils/preprocess/ of that "
    "repository make the same files from the original data."
)


def _source(title: str, reference: str, page: str, layout: str) -> str:
    return f"{title}\n  paper: {reference}\n  source: {page}\n  layout: {layout}\n  {_RELEASE_NOTE}"


_MAFAULDA_SRC = (
    "MaFaulDa, Machinery Fault Database (SMT/UFRJ)",
    "F. M. L. Ribeiro. MaFaulDa - Machinery Fault Database, 2016",
    "https://www02.smt.ufrj.br/~offshore/mfs/page_01.html#SEC2 (full.zip)",
)
_UMGED_SRC = (
    "UM-GearEccDataset (UMGED), University of Macau",
    "J. Li, H. Chen, X.-B. Wang, Z.-X. Yang. A comprehensive gear eccentricity dataset with "
    "multiple fault severity levels, Mechanical Systems and Signal Processing 224:112068, 2025",
    "https://github.com/LeeJMJM/UM-GearEccDataset",
)
_PU_SRC = (
    "Paderborn University bearing data (PU), KAt-DataCenter",
    "C. Lessmeier, J. K. Kimotho, D. Zimmer, W. Sextro. Condition monitoring of bearing damage "
    "in electromechanical drive systems by using motor current signals of electric motors: a "
    "benchmark data set for data-driven classification, PHM Society European Conference 3, 2016",
    "https://groups.uni-paderborn.de/kat/BearingDataCenter/",
)
_SDUST_SRC = (
    "SDUST dataset, Shandong University of Science and Technology",
    "Wang et al., Knowledge-Based Systems 284:111285, 2024; Zhang et al., Advanced Engineering "
    "Informatics 62:102730, 2024; Han et al., IEEE TIM 72, 2023; Han et al., Measurement "
    "198:111131, 2022",
    "https://github.com/JRWang-SDUST/SDUST-Dataset",
)


def _flat(name: str, what: str) -> str:
    return f"<data-root>/{name}/ holds the files directly: {what}"


#: Where each dataset is published and how its release must be laid out (text only: rmis never
#: redistributes data). Keys: the 13 FD dataset names and one entry for the DCASE family.
RELEASE_SOURCES: dict[str, str] = {
    "dcase20-dcase25": _source(
        "DCASE challenge task 2 (2020-2025), anomalous sound detection",
        "Koizumi et al. DCASE 2020; Kawaguchi et al. DCASE 2021; Dohi et al. DCASE 2022 and "
        "2023; Nishida et al. DCASE 2024 and 2025 (task descriptions)",
        "https://dcase.community (each year's task 2 page); Zenodo records per year, e.g. 2020 "
        "dev 3678171, eval train 3727685, eval test 3841772 (all listed in utils/download/"
        "README.md of the RMIS repository)",
        _DCASE_LAYOUT,
    ),
    "iica": _source(
        "IDMT-ISA-COMPRESSED-AIR (IICA), Fraunhofer IDMT",
        "D. Johnson, J. Kirner, S. Grollmisch, J. Liebetrau. Compressed air leakage detection "
        "using acoustic emissions with neural networks, INTER-NOISE 2020",
        "https://www.idmt.fraunhofer.de/en/publications/datasets/isa-compressed-air.html "
        "(Zenodo record 7551606)",
        "<data-root>/iica/{tubeleak,ventleak,ventlow}/<noise>/<session>/"
        "<S>_<iO|niO>_<knob>_<mic>_<i>.wav: every recording cut into 10-s mono pieces at 48 kHz "
        "(utils/preprocess/iica/iica_split_10.py).",
    ),
    "iiee": _source(
        "IDMT-ISA-ELECTRIC-ENGINE (IIEE), Fraunhofer IDMT",
        "S. Grollmisch, J. Abesser, J. Liebetrau, H. Lukashevich. Sounding industry: challenges "
        "and datasets for industrial sound analysis, EUSIPCO 2019",
        "https://www.idmt.fraunhofer.de/en/publications/datasets/isa-electric-engine.html "
        "(Zenodo record 7551261)",
        "<data-root>/iiee/{train_cut,test_cut}/{engine1_good,engine2_broken,engine3_heavyload}/"
        "*.wav as extracted from the original archive (3-s mono pieces at 44.1 kHz; the uncut "
        "train/ and test/ may stay, they are ignored).",
    ),
    "wtpg": _source(
        "WT-planetary-gearbox-dataset (WTPG)",
        "D. Liu, L. Cui, W. Cheng. A review on deep learning in planetary gearbox health state "
        "recognition: methods, applications, and dataset publication, Measurement Science and "
        "Technology 35(1):012002, 2023",
        "https://github.com/Liudd-BJUT/WT-planetary-gearbox-dataset",
        _flat(
            "wtpg",
            "<class>_<k>_<X><k>_<speed>_channel<1|2>_ch0_<i>.flac, 10-s mono FLAC at 48 kHz "
            "(utils/preprocess/wtpg/wtpg_MAT2flac.py then wtpg_split_10.py).",
        ),
    ),
    "mafaulda_sound": _source(
        *_MAFAULDA_SRC,
        _flat(
            "mafaulda_sound",
            "<class path with / as _>_<rotfreq>_channel8.wav, 5-s mono at 50 kHz (microphone; "
            "utils/preprocess/mafaulda/mafaulda_csv2wav_5s.py --dataset sound).",
        ),
    ),
    "mafaulda_vib": _source(
        *_MAFAULDA_SRC,
        _flat(
            "mafaulda_vib",
            "<class path with / as _>_<rotfreq>_channel<2..7>.wav, 5-s mono at 50 kHz "
            "(accelerometers; mafaulda_csv2wav_5s.py --dataset vibration).",
        ),
    ),
    "sdust_bearing": _source(
        *_SDUST_SRC,
        _flat(
            "sdust_bearing",
            "<cls>_<cls>_<rpm>_<load>[_<k>]_channel<1..6>_ch0_<i>.wav, 10-s mono at 25.6 kHz "
            "(utils/preprocess/sdust_bearing/: mat2wav_40s then split_10).",
        ),
    ),
    "sdust_gear": _source(
        *_SDUST_SRC,
        _flat(
            "sdust_gear",
            "<folder>_<name>_<rpm>_<load>_<k>_channel<1..6>_ch0_<i>.wav, 10-s mono at 25.6 kHz "
            "(utils/preprocess/sdust_gear/: mat2wav_20s then split_10).",
        ),
    ),
    **{
        name: _source(
            *_UMGED_SRC,
            _flat(
                name,
                "G<g>_E<ee>_T<t>_N<nnn>_G<g>_E<ee>_T<t>_S<rpm>_channel<nn>_ch0_<i>.wav with "
                f"channels {chs} only, 10-s mono at 51.2 kHz (utils/preprocess/umged/: "
                f"umged_mat2wav_600s.py --dataset {key} then umged_split_10.py).",
            ),
        )
        for name, chs, key in (
            ("umged_sound", "06", "sound"),
            ("umged_vib", "03-05", "vibration"),
            ("umged_vol", "07-08", "voltage"),
            ("umged_cur", "01-02", "current"),
        )
    },
    **{
        name: _source(
            *_PU_SRC,
            _flat(
                name,
                "<healthy|IR|OR>[_<artificial|lifetime>]_<bearing>_N<s>_M<t>_F<f>_<bearing>_<m>"
                f"_channel{chs}.wav, about 4-s mono at 64 kHz (utils/preprocess/pu/: "
                f"pu_mat2wav_4s.py --dataset {key}).",
            ),
        )
        for name, chs, key in (("pu_vib", "7", "vibration"), ("pu_cur", "<2|3>", "current"))
    },
}


@dataclass(frozen=True)
class ReleaseScan:
    """The outcome of reading one dataset folder.

    Attributes:
        name: dataset name.
        root: the dataset folder.
        table: rows of the files that follow the rules (columns as :func:`fd_table`).
        problems: ``"<file>: <reason>"`` for every released file that matches no rule.
        ignored: ``"<file>: <reason>"`` for files that are not released audio of the dataset.
    """

    name: str
    root: Path
    table: pd.DataFrame
    problems: list[str]
    ignored: list[str]


def release_rule(name: str) -> ReleaseRule:
    """The release rule of FD dataset ``name``.

    Raises:
        RMISError: an unknown name or an AD dataset (with a hint).
    """
    if name in RELEASE_RULES:
        return RELEASE_RULES[name]
    if name in DATASETS:
        raise RMISError(
            f"dataset {name!r} is an anomaly-detection dataset: its files are read by "
            "rmis.data.dcase, not by the fault-diagnosis release loader"
        )
    raise RMISError(f"unknown fault-diagnosis dataset {name!r}: {closest(name, FD_DATASETS)}")


def _walk(root: Path, rule: ReleaseRule) -> Iterator[tuple[str, str | None]]:
    """``(relative path, reason to ignore or None)`` of every file under ``root``."""
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        kept = []
        for d in sorted(dirnames):
            if d.startswith("."):
                yield f"{prefix}{d}/", "hidden folder"
            elif not prefix and d in rule.ignored_dirs:
                yield f"{d}/", "folder not part of the release layout (ignored by rule)"
            else:
                kept.append(d)
        dirnames[:] = kept
        for f in sorted(filenames):
            yield prefix + f, None


def _label(rule: LabelRule, match: re.Match[str], name: str, classes: tuple[str, ...]) -> str:
    """The label of a file (``name``: file name without suffix); raises ValueError(reason)."""
    if rule.kind == "template":
        parts = {}
        for key, value in match.groupdict().items():
            if value is not None and key in rule.values:
                if value not in rule.values[key]:
                    allowed = " or ".join(rule.values[key])
                    raise ValueError(f"{key} token {value!r} is not {allowed}")
                value = rule.values[key][value]
            parts[key] = value
        return rule.template.format(**parts)
    if rule.kind == "prefix":
        fits = [c for c in classes if name.startswith(c + "_")]
        if not fits:
            raise ValueError(f"the name starts with none of the classes {list(classes)}")
        return max(fits, key=len)
    if rule.kind == "anywhere":
        claimed = [False] * len(name)
        found = []
        for c in sorted(classes, key=len, reverse=True):
            for m in re.finditer(re.escape(c), name):
                if not any(claimed[m.start() : m.end()]):
                    claimed[m.start() : m.end()] = [True] * len(c)
                    found.append(c)
        distinct = sorted(set(found))
        if len(distinct) != 1:
            what = "no class name" if not distinct else f"several class names {distinct}"
            raise ValueError(f"the name holds {what} (classes: {list(classes)})")
        return distinct[0]
    tokens = {t for t in name.split("_") if re.fullmatch(rule.token, t)}
    if len(tokens) != 1:
        what = "no" if not tokens else f"conflicting ({sorted(tokens)})"
        raise ValueError(f"the name has {what} {rule.token} token")
    return tokens.pop()


def _reason(name: str, rule: ReleaseRule, rel: str, classes: tuple[str, ...]) -> dict | str:
    """The row of released file ``rel`` or the reason why it matches no rule."""
    if rule.layout == "flat" and "/" in rel:
        return (
            f"lies in a subfolder, but {name} is a flat layout: its files lie directly in the "
            "dataset folder (move them up or point the dataset folder at the subfolder)"
        )
    stem = rel[: -len(rule.suffix)]
    match = rule.pattern.fullmatch(stem)
    if match is None:
        return f"does not follow {rule.pattern_doc}{rule.suffix}"
    channel = match.groupdict().get("channel")
    if rule.channels is not None and channel not in rule.channels:
        owner = _CHANNEL_OWNER.get(name.split("_")[0], {}).get(channel or "")
        where = f"belongs to {owner}" if owner else "belongs to no RMIS dataset"
        return (
            f"channel {channel} {where}; {name} holds channels {', '.join(rule.channels)} only "
            "(a mixed-up folder: move the file to its own dataset's folder)"
        )
    try:
        label = _label(rule.label, match, stem.rsplit("/", 1)[-1], classes)
    except ValueError as exc:
        return str(exc)
    if label not in classes:
        return f"label {label!r} is not one of the classes {list(classes)}"
    row = {"file": rel, "label": label, "group": match["group"]}
    if rule.split_dirs is not None:
        row["split"] = rule.split_dirs[match["split"]]
    return row


def scan_release(name: str, root: str | os.PathLike) -> ReleaseScan:
    """Read the released files of FD dataset ``name`` under its folder ``root``, by name only.

    Unlike :func:`fd_table` this never raises for files: each file that matches no rule is
    listed in ``problems`` with the reason (for ``rmis data check``), files that are not part of
    the release in ``ignored``.

    Raises:
        RMISError: unknown dataset, or ``root`` is not a folder.
    """
    rule = release_rule(name)
    classes = DATASETS[name].classes
    root = Path(root)
    if not root.is_dir():
        raise RMISError(
            f"{name}: dataset folder {str(root)!r} does not exist or is not a folder; "
            "`rmis data download-help` describes the expected layout"
        )
    base = root.resolve()
    rows, problems, ignored = [], [], []
    for rel, why in _walk(root, rule):
        leaf = rel.rstrip("/").rsplit("/", 1)[-1]
        if why is None and leaf.startswith("."):
            why = "hidden file"
        if why is None and not rel.endswith(rule.suffix):
            why = f"not a {rule.suffix} file"
        if why is None and any(s in leaf for s in rule.ignored_substrings):
            why = f"name contains {'/'.join(rule.ignored_substrings)} (ignored by rule)"
        if why is not None:
            ignored.append(f"{rel}: {why}")
            continue
        row = _reason(name, rule, rel, classes)
        if isinstance(row, str):
            problems.append(f"{rel}: {row}")
            continue
        row["path"] = str(base / rel)
        rows.append(row)
    columns = list(COLUMNS) + (["split"] if rule.split_dirs is not None else [])
    table = pd.DataFrame(rows, columns=columns)
    table = table.sort_values("file", kind="stable", ignore_index=True)
    return ReleaseScan(name=name, root=root, table=table, problems=problems, ignored=ignored)


def fd_table(name: str, root: str | os.PathLike) -> pd.DataFrame:
    """Metadata table of FD dataset ``name`` in the official release layout under ``root``.

    Returns:
        Columns ``file,label,group,path`` (plus ``split``, train|test, for IIEE): ``file`` is
        the path relative to ``root`` with ``/`` separators, ``path`` the absolute path; rows
        sorted by ``file``. Audio is not opened.

    Raises:
        RMISError: unknown dataset, missing folder, no released files, or files that match no
            rule (the message names them and why; ``rmis data check`` lists all of them).
    """
    scan = scan_release(name, root)
    rule = RELEASE_RULES[name]
    if scan.problems:
        shown = "; ".join(scan.problems[:_SHOWN])
        more = f" (and {len(scan.problems) - _SHOWN} more)" if len(scan.problems) > _SHOWN else ""
        raise RMISError(
            f"{name}: {len(scan.problems)} files under {str(root)!r} match no rule of the "
            f"release layout: {shown}{more}. Fix or remove them; the rule is: {rule.doc} "
            "(`rmis data check` lists every problem)"
        )
    if scan.table.empty:
        raise RMISError(
            f"{name}: no released {rule.suffix} files under {str(root)!r}; expected {rule.doc} "
            "(`rmis data download-help` describes the layout)"
        )
    return scan.table
