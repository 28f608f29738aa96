"""``mapsage reliability RUN [--severities 1,3,5] [--max-tiles N] [--wait]``: queue a ``reliability`` job.

``RUN`` is a run id (its best checkpoint), ``<run id>/<file>``, a checkpoint file or ``latest:<template>``. A run
id's own config (dataset, classes, evaluation window) drives the card; other references use ``--config``
(default: the demo reliability template). With ``--wait`` the job is followed (progress on the terminal) and the
card's headline figures are printed when it ends."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from mapsage.workspace import PROJECT_ROOT, run_dir

from .run_cmd import follow

DEFAULT_TEMPLATE = PROJECT_ROOT / "configs" / "stage3_inference" / "reliability_demo_segformer_mit-b0_dubai.yaml"


def register(sub) -> None:
    p = sub.add_parser("reliability", help="the reliability card of a run's checkpoint: corruption robustness, "
                                           "calibration (ECE, temperature), extent invariance, block bootstrap")
    p.add_argument("run", help="a run id, <run id>/<checkpoint file>, a checkpoint file or latest:<template>")
    p.add_argument("--config", default=None, help="config for a checkpoint that is not a run id (default: "
                                                   "configs/stage3_inference/reliability_demo_segformer_mit-b0_dubai.yaml)")
    p.add_argument("--severities", default=None, metavar="LIST", help="severities of 1..5, e.g. 1,3,5")
    p.add_argument("--corruptions", default=None, metavar="LIST", help="corruption names, comma-separated")
    p.add_argument("--max-tiles", type=int, default=None, help="tiles per pass, spread over the split")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. --set reliability.block_by=group")
    p.add_argument("--gpus", type=int, default=None, metavar="N", help="GPUs for the job (0 = a CPU slot)")
    p.add_argument("--wait", action="store_true", help="follow the job until it ends; print the card's figures")
    p.set_defaults(func=reliability_command)


def config_for(run: str, config: str | None) -> Path:
    if config:
        return Path(config)
    head = run.split("/", 1)[0]
    if head and not run.startswith("latest:") and not Path(run).is_absolute():
        folder = run_dir(head)
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    return DEFAULT_TEMPLATE


def reliability_overrides(run: str, severities=None, corruptions=None, max_tiles=None) -> list[str]:
    out = ["stage.kind=reliability", "stage.plan_stage=3", f"stage.checkpoint={run}", "stage.name=null",
           "stage.title=" + json.dumps(f"Reliability card of {run}")]
    if severities:
        out.append("reliability.severities=[" + ", ".join(str(int(s)) for s in str(severities).split(",")) + "]")
    if corruptions:
        out.append("reliability.corruptions=[" + ", ".join(c.strip() for c in str(corruptions).split(",")) + "]")
    if max_tiles is not None:
        out.append(f"reliability.max_tiles={int(max_tiles)}")
    return out


def launch_reliability(run: str, config: str | None = None, overrides=(), gpus=None, **opts) -> str:
    """Queue a reliability job of ``run``; returns its run id. The app's action and the command both call this."""
    from runners import jobs

    cfg_path = config_for(run, config)
    return jobs.launch(str(cfg_path), reliability_overrides(run, **opts) + list(overrides), gpus=gpus)


def card_lines(card: dict) -> list[str]:
    """The card's headline figures as text lines (percent / points)."""
    lines = []
    cor = card.get("corruption") or {}
    s = cor.get("summary") or {}
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}"   # noqa: E731
    if cor:
        sev = cor.get("severities") or []
        lines.append(f"corruptions ({len({r['corruption'] for r in cor['rows']})} x {len(sev)} severities, "
                     f"{cor.get('n_images')} tiles): clean mIoU {pct(s.get('clean_miou'))}, mean corrupted "
                     f"{pct(s.get('mean_corrupted_miou'))}, relative robustness "
                     f"{s.get('relative_robustness') or float('nan'):.3f}")
        head = "  corruption            " + "".join(f"  sev {v:<5}" for v in sev)
        lines.append(head + "   (mIoU %, BIoU % )")
        for name in dict.fromkeys(r["corruption"] for r in cor["rows"]):
            cells = {r["severity"]: r for r in cor["rows"] if r["corruption"] == name}
            lines.append(f"  {name:<22}" + "".join(f"  {pct(cells[v]['miou']):>5}/{pct(cells[v]['mbiou']):>5}"
                                                   if v in cells else "  " + " " * 11 for v in sev))
    cal = card.get("calibration") or {}
    if cal:
        held = (cal.get("heldout") or {}).get("ece_after")
        lines.append(f"calibration: T = {cal['temperature']:.3f}, ECE {pct(cal['ece_before'])} % -> "
                     f"{pct(cal['ece_after'])} % ({cal['n_bins']} {cal['bins']} bins, {cal['n_sampled']} pixels; "
                     f"all pixels before {pct(cal.get('ece_before_all'))} %"
                     + (f"; cross-fitted after {pct(held)} %" if held is not None else "") + ")")
    ext = card.get("extent") or {}
    if ext.get("rate") is not None:
        z = {r["zone"]: r for r in ext["zones"]}
        lines.append(f"extent invariance: {pct(ext['rate'])} % of pixels change class ({ext['a']['tile']} vs "
                     f"{ext['b']['tile']} shifted {ext['b']['offset']}); rate at seams {pct(z['seam']['rate'])} %, "
                     f"borders {pct(z['border']['rate'])} %, interior {pct(z['interior']['rate'])} %")
    boot = card.get("bootstrap") or {}
    for c in boot.get("comparisons", [])[:3]:
        b, t = c["block"], c["tile"]
        lines.append(f"bootstrap {c['b']} − {c['a']}: Δ mIoU {100 * c['delta']:+.2f} points; {b['label']}: "
                     f"[{100 * b['ci_low']:+.2f}, {100 * b['ci_high']:+.2f}] (width {100 * (b['ci_high'] - b['ci_low']):.2f}); "
                     f"tile-wise ({t['n_tiles']} tiles): [{100 * t['ci_low']:+.2f}, {100 * t['ci_high']:+.2f}] "
                     f"(width {100 * (t['ci_high'] - t['ci_low']):.2f}); minimum detectable effect "
                     f"{100 * b['mde']:.2f} points (tile-wise {100 * t['mde']:.2f})")
    return lines


def reliability_command(args) -> int:
    from runners import jobs

    run_id = launch_reliability(args.run, args.config, args.overrides, args.gpus, severities=args.severities,
                                corruptions=args.corruptions, max_tiles=args.max_tiles)
    print(run_id, flush=True)
    if not args.wait:
        return 0

    status = follow(run_id)
    if status in ("failed", "died"):
        st = jobs.live_status(run_id)
        print(f"run {run_id} {status}: {st.get('message')}", file=sys.stderr)
    elif status == "succeeded":
        path = run_dir(run_id) / "reliability.json"
        if path.is_file():
            for line in card_lines(json.loads(path.read_text())):
                print(line)
    return jobs.exit_code(status)
