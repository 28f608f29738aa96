"""``mapsage submit RUN --format loveda [--out FILE.zip]``: build a benchmark submission zip from a run's
predictions of the benchmark's split (RUN: a ``predict`` run, or the run whose checkpoint a ``predict`` run used),
then validate it. ``mapsage submit validate ZIP [--format loveda] [--against RUN|FOLDER]``: validate any zip,
ours or made elsewhere (``--against``: the run whose predictions, or the image folder whose ids, the zip must
cover; without it, the benchmark's full split count). A problem names the file and the rule; exit status 1."""
from __future__ import annotations

import json
from pathlib import Path

from mapsage.deliver.submission import SubmissionInvalid, build_submission, get_format, validate_submission
from mapsage.errors import UserError
from mapsage.workspace import runs_dir
from runners.commands.runs_cmd import resolve_run_id


def register(sub) -> None:
    p = sub.add_parser("submit", help="build (or validate) a benchmark submission zip, e.g. LoveDA's CodaLab zip",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("target", metavar="RUN|validate", help="a run id (or prefix), or the word 'validate'")
    p.add_argument("zip", nargs="?", metavar="ZIP", help="with 'validate': the zip to check")
    p.add_argument("--format", default="loveda", help="the benchmark format (default loveda)")
    p.add_argument("--out", default=None, metavar="FILE.zip",
                   help="where to write the zip (default: <predict run>/submission_<format>.zip)")
    p.add_argument("--against", default=None, metavar="RUN|FOLDER",
                   help="with 'validate': the predict run or image folder whose ids the zip must hold")
    p.add_argument("--json", action="store_true", help="print the validation report as JSON")
    p.set_defaults(func=submit_command)


def _manifest(path: Path) -> dict:
    from mapsage.deliver.predict import read_manifest
    return read_manifest(path)


def find_prediction_manifest(run_id: str, split: str) -> Path:
    """The manifest of ``run_id`` (a predict run) or of the newest complete predict run of ``run_id``'s checkpoint
    on ``split``."""

    own = runs_dir() / run_id / "predictions" / "manifest.json"
    if own.is_file():
        m = _manifest(own)
        if (m.get("source") or {}).get("split") != split:
            raise UserError(f"run {run_id} predicted {m.get('source', {}).get('name')!r}, not the {split} split; "
                            f"run `mapsage predict <model run> --on {split}` and submit that")
        if not m.get("complete"):
            raise UserError(f"run {run_id} stopped before predicting every {split} image; predict again")
        return own
    found = []
    for mpath in runs_dir().glob("*/predictions/manifest.json"):
        try:
            m = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (m.get("identity") or {}).get("run") == run_id and (m.get("source") or {}).get("split") == split \
                and m.get("complete"):
            found.append((float(m.get("created_at") or 0), mpath))
    if not found:
        raise UserError(f"run {run_id} has no complete predictions of the {split} split; run "
                        f"`mapsage predict {run_id} --on {split}` first")
    return max(found)[1]


def _expected_from(against: str, fmt) -> list[str]:
    folder = Path(against).expanduser()
    if folder.is_dir():
        stems = [fmt.stem_of(p.stem) for p in sorted(folder.rglob("*"))
                 if p.is_file() and p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff")
                 and "masks" not in p.parts and "masks_png" not in p.parts]
        if not stems:
            raise UserError(f"--against {against}: the folder holds no images")
        return stems
    rid = resolve_run_id(against)
    m = _manifest(find_prediction_manifest(rid, fmt.split))
    return [fmt.stem_of(i["id"]) for i in m["inputs"]]


def _print(report, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"path": report.path, "format": report.format, "files": report.files, "ok": report.ok,
                          "problems": [vars(p) for p in report.problems]}, indent=1))
    else:
        print(report.summary(limit=20))


def submit_command(args) -> int:
    fmt = get_format(args.format)
    if args.target == "validate":
        if not args.zip:
            raise UserError("mapsage submit validate ZIP: name the zip to check")
        expected = _expected_from(args.against, fmt) if args.against else None
        report = validate_submission(args.zip, fmt, expected=expected)
        _print(report, args.json)
        return 0 if report.ok else 1
    rid = resolve_run_id(args.target)
    mpath = find_prediction_manifest(rid, fmt.split)
    m = _manifest(mpath)
    preds = [(o["id"], Path(o["pred"])) for o in m["outputs"]]
    missing = [str(p) for _, p in preds if not p.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: prediction file missing ({len(missing)} in all); predict the split again")
    out = Path(args.out) if args.out else mpath.parent.parent / f"submission_{fmt.name}.zip"
    try:
        report = build_submission(preds, fmt, out, expected=[i["id"] for i in m["inputs"]])
    except SubmissionInvalid as exc:
        _print(exc.report, args.json)
        return 1
    _print(report, args.json)
    if fmt.full_count is not None and report.files != fmt.full_count:
        print(f"note: {report.files} files; the full {fmt.name} {fmt.split} split has {fmt.full_count} - this zip "
              f"covers the predicted folder only", flush=True)
    from mapsage.deliver.model_source import sha256_file
    print(f"{out}  sha256 {sha256_file(out)}  from {m.get('identity_short')}", flush=True)
    return 0
