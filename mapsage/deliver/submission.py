"""Benchmark submissions: build the zip a leaderboard expects from a run's predictions, and validate any zip
(ours or made elsewhere) before anyone uploads it.

Formats are rows of :data:`FORMATS`; a new benchmark (ISPRS colour TIFFs, a face-parsing challenge, a CSV of
classification labels) is a new row, not new code paths. A row says what one file looks like (suffix, pixel
encoding, size, the allowed values), how the files are laid out (at the zip root), how a prediction's id becomes
its file name, and how many files the full split has.

Validation checks, and names in every problem, the rules: ``zip`` (readable zip), ``layout`` (files at the root,
no folders), ``extension``, ``name`` (the file-name rule), ``duplicate``, ``decode``, ``channels``
(single-channel), ``dtype`` (8-bit), ``size``, ``values`` (the allowed range) and ``count`` (every expected id
present, nothing extra). LoveDA's CodaLab scored zips with a folder inside as 0 (LoveDA issues #6, #13, #32):
``layout`` exists for exactly that."""
from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from ..errors import UserError


@dataclass(frozen=True)
class SubmissionFormat:
    name: str
    description: str
    suffix: str = ".png"
    encoding: str = "ids"                          # "ids": single-channel class ids
    size: Optional[tuple[int, int]] = None         # (height, width) every file must have
    values: tuple[int, int] = (0, 255)             # inclusive range of allowed values
    layout: str = "root"                           # "root": every file at the zip root
    name_pattern: str = r".+"                      # the file stem must match this
    full_count: Optional[int] = None               # files in the benchmark's full split
    split: str = "test"                            # the split the submission is for
    stem_of: Callable[[str], str] = lambda sample_id: sample_id.replace("\\", "/").rsplit("/", 1)[-1]
    value_of_class: Optional[tuple[int, ...]] = None   # class id -> submitted value (None: the same)
    url: str = ""


FORMATS: dict[str, SubmissionFormat] = {
    "loveda": SubmissionFormat(
        name="loveda",
        description="LoveDA semantic segmentation (CodaLab): one single-channel 8-bit PNG per Test image, named "
                    "by its id (e.g. 4191.png), class values 0-6, 1024x1024, all PNGs at the zip root",
        size=(1024, 1024), values=(0, 6), name_pattern=r"^\d+$", full_count=1796, split="test",
        url="https://codalab.lisn.upsaclay.fr/competitions/421"),
}


@dataclass
class Problem:
    file: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.file}: {self.rule} - {self.detail}"


@dataclass
class ValidationReport:
    path: str
    format: str
    files: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self, limit: int = 5) -> str:
        if self.ok:
            return f"{self.path}: valid {self.format} submission ({self.files} files)"
        shown = "; ".join(str(p) for p in self.problems[:limit])
        more = f" (and {len(self.problems) - limit} more)" if len(self.problems) > limit else ""
        return f"{self.path}: {len(self.problems)} problem(s) for {self.format}: {shown}{more}"


class SubmissionInvalid(UserError):
    """A submission zip that breaks its format's rules (the message names the file and the rule)."""

    def __init__(self, report: ValidationReport):
        super().__init__(report.summary())
        self.report = report


def get_format(name: str) -> SubmissionFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise UserError(f"--format {name!r} is not a known submission format; known: {', '.join(sorted(FORMATS))}"
                        ) from None


def check_array(name: str, arr: np.ndarray, fmt: SubmissionFormat, problems: list[Problem]) -> None:
    if arr.ndim != 2:
        problems.append(Problem(name, "channels", f"has {arr.shape[-1] if arr.ndim == 3 else arr.ndim} channels; "
                                                  "it must be a single-channel (greyscale) image of class ids"))
        return
    if arr.dtype != np.uint8:
        problems.append(Problem(name, "dtype", f"is {arr.dtype}; it must be 8-bit"))
    if fmt.size is not None and tuple(arr.shape) != tuple(fmt.size):
        problems.append(Problem(name, "size", f"is {arr.shape[1]}x{arr.shape[0]} (WxH); it must be "
                                              f"{fmt.size[1]}x{fmt.size[0]}"))
    lo, hi = fmt.values
    vmin, vmax = int(arr.min()), int(arr.max())
    if vmin < lo or vmax > hi:
        bad = sorted(int(v) for v in np.unique(arr) if v < lo or v > hi)[:5]
        problems.append(Problem(name, "values", f"holds value(s) {bad}; only {lo}..{hi} are allowed"))


def _decode(name: str, data: bytes, problems: list[Problem]) -> Optional[np.ndarray]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.mode == "P":
                problems.append(Problem(name, "channels", "is a palette PNG; save the class ids as a greyscale "
                                                          "(mode L) PNG"))
                return None
            return np.asarray(im)
    except Exception as exc:  # noqa: BLE001 - any undecodable file is a named problem
        problems.append(Problem(name, "decode", f"cannot be decoded as an image ({exc})"))
        return None


def validate_submission(path: str | Path, fmt: SubmissionFormat | str, expected: Optional[Iterable[str]] = None
                        ) -> ValidationReport:
    """Check a zip against ``fmt``; ``expected``: the file stems the split needs (else the format's full count)."""
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    path = Path(path)
    report = ValidationReport(str(path), fmt.name)
    problems = report.problems
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        problems.append(Problem(path.name, "zip", f"is not a readable zip file ({exc})"))
        return report
    stems: dict[str, str] = {}
    pattern = re.compile(fmt.name_pattern)
    with zf:
        for info in zf.infolist():
            name = info.filename
            if info.is_dir():
                problems.append(Problem(name, "layout", f"is a folder; {fmt.name} needs every file at the zip root "
                                                        "(zip the files themselves, not their folder)"))
                continue
            if fmt.layout == "root" and "/" in name.strip("/"):
                problems.append(Problem(name, "layout", f"is inside a folder; {fmt.name} needs every file at the "
                                                        "zip root (a folder inside the zip scores 0)"))
                continue
            base = name.rsplit("/", 1)[-1]
            stem, dot, suffix = base.rpartition(".")
            if not dot or "." + suffix.lower() != fmt.suffix:
                problems.append(Problem(name, "extension", f"must be a {fmt.suffix} file"))
                continue
            if not pattern.match(stem):
                problems.append(Problem(name, "name", f"name {stem!r} does not match the image ids of "
                                                      f"{fmt.name} ({fmt.name_pattern})"))
            if stem in stems:
                problems.append(Problem(name, "duplicate", f"the id {stem} is already in the zip as {stems[stem]}"))
                continue
            stems[stem] = name
            arr = _decode(name, zf.read(info), problems)
            if arr is not None:
                check_array(name, arr, fmt, problems)
    report.files = len(stems)
    if expected is not None:
        want = {str(s) for s in expected}
        missing = sorted(want - set(stems))
        extra = sorted(set(stems) - want)
        if missing:
            problems.append(Problem(", ".join(f"{m}{fmt.suffix}" for m in missing[:5]) + ("..." if len(missing) > 5
                                                                                           else ""),
                                    "count", f"{len(missing)} of the split's {len(want)} images have no file"))
        if extra:
            problems.append(Problem(", ".join(stems[e] for e in extra[:5]) + ("..." if len(extra) > 5 else ""),
                                    "count", f"{len(extra)} file(s) are not images of the split"))
    elif fmt.full_count is not None and len(stems) != fmt.full_count:
        problems.append(Problem(path.name, "count", f"holds {len(stems)} files; the {fmt.name} {fmt.split} split has "
                                                    f"{fmt.full_count} (pass the split to check against with --against)"))
    return report


def build_submission(predictions: list[tuple[str, Path]], fmt: SubmissionFormat | str, out_zip: str | Path,
                     expected: Optional[Iterable[str]] = None) -> ValidationReport:
    """Zip ``(sample id, id PNG)`` predictions in ``fmt``'s layout and validate the result. Raises
    :class:`SubmissionInvalid` (the zip is kept for inspection) when it breaks a rule."""
    from PIL import Image

    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    lut = None
    if fmt.value_of_class is not None:
        lut = np.zeros(256, np.uint8)
        lut[:len(fmt.value_of_class)] = fmt.value_of_class
    seen: dict[str, str] = {}
    tmp = out_zip.with_name(out_zip.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for sample_id, png in predictions:
            stem = fmt.stem_of(sample_id)
            if stem in seen:
                raise UserError(f"{png}: predictions {seen[stem]} and {sample_id} both become {stem}{fmt.suffix} "
                                f"in a {fmt.name} submission; predict the {fmt.split} split only")
            seen[stem] = sample_id
            with Image.open(png) as im:
                arr = np.asarray(im)
            if lut is not None:
                arr = lut[arr]
            buf = io.BytesIO()
            Image.fromarray(arr.astype(np.uint8), mode="L").save(buf, format="PNG")
            zf.writestr(f"{stem}{fmt.suffix}", buf.getvalue())
    tmp.replace(out_zip)
    report = validate_submission(out_zip, fmt, expected=[fmt.stem_of(e) for e in expected] if expected is not None
                                 else None)
    if not report.ok:
        raise SubmissionInvalid(report)
    return report
