"""The launch form of one template: its key knobs as editors inside an ``st.form`` (editing never reruns the
page; only Check and Launch do), plus free-form ``--set`` lines. Returns the overrides the form produces."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

import pandas as pd
import streamlit as st

from mapsage.config import Config, ConfigError, run_name
from mapsage.schedules import lr_figure

from . import knobs
from .cluster import executor_fields
from .launch import confirm_pending
from .sweep_form import fields as sweep_fields
from .templates import Template


@dataclass
class FormResult:
    action: Optional[str]            # None | "check" | "launch" | "sweep"
    overrides: list[str]
    cfg: Optional[Config]            # the resolved config (None when it does not resolve)
    error: Optional[str]
    sweep: Optional[dict] = None     # the "sweep these knobs" fields (training kinds; action "sweep")


def template_key(t: Template) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", t.rel).strip("_")


def _none_if_zero(v: Any) -> Any:
    return None if v in (0, None) else int(v)


def _editor_rows(value) -> list[dict]:
    if isinstance(value, pd.DataFrame):
        return value.to_dict("records")
    return list(value or [])


def render(t: Template, checkpoint_runs: list[str]) -> FormResult:
    """Draw the form for ``t`` (which must have loaded). ``checkpoint_runs``: succeeded training runs offered as
    checkpoints for evaluation-type templates, newest first."""
    cfg = t.cfg
    assert cfg is not None
    key = template_key(t)
    base = knobs.defaults(cfg)
    shown = knobs.applicable(cfg)
    values: dict[str, Any] = {}
    with st.form(f"form_{key}", border=True):
        if "model.arch" in shown:
            c1, c2, c3 = st.columns([1, 1, 2])
            values["model.arch"] = c1.selectbox("Model", knobs.ARCHS, index=knobs.ARCHS.index(base["model.arch"]),
                                                key=f"{key}:arch", help="model.arch")
            values["model.encoder"] = c2.text_input("Backbone", base["model.encoder"], key=f"{key}:encoder",
                                                    help="model.encoder: mit_b0..mit_b5, resnet50, "
                                                         "tu-convnext_tiny …")
            values["model.pretrained"] = c3.text_input(
                "Pretrained weights file", base["model.pretrained"], key=f"{key}:pretrained",
                help="model.pretrained: `none` or a local weights file (ImageNet, EarthVQA, …). Nothing is "
                     "downloaded; a hub name fails with a message naming this key.")
        if "loss.schedule" in shown:
            st.markdown("**Loss mix** by epoch (loss.schedule; weights per term, a row per phase)")
            rows = knobs.schedule_to_rows(cfg)
            edited = st.data_editor(
                pd.DataFrame(rows, columns=["from_epoch", *knobs.LOSS_TERMS]), key=f"{key}:loss", num_rows="dynamic",
                hide_index=True, width="stretch",
                column_config={"from_epoch": st.column_config.NumberColumn("from epoch", min_value=0, step=1),
                               **{term: st.column_config.NumberColumn(term, min_value=0.0, max_value=10.0,
                                                                      step=0.05, format="%.2f")
                                  for term in knobs.LOSS_TERMS}}, placeholder="–")
            values["loss.schedule"] = ("rows", _editor_rows(edited))
        if "augment.crop_size" in shown:
            c1, c2, c3, c4, c5 = st.columns(5)
            crop = base["augment.crop_size"]
            h = c1.number_input("Crop height", 32, 4096, int(crop[0]), step=32, key=f"{key}:crop_h",
                                help="augment.crop_size[0]")
            w = c2.number_input("Crop width", 32, 4096, int(crop[1]), step=32, key=f"{key}:crop_w",
                                help="augment.crop_size[1]")
            values["augment.crop_size"] = [int(h), int(w)]
            values["train.epochs"] = int(c3.number_input("Epochs", 1, 10000, base["train.epochs"], key=f"{key}:epochs",
                                                         help="train.epochs"))
            values["train.steps_per_epoch"] = _none_if_zero(c4.number_input(
                "Steps per epoch (0 = all)", 0, 1_000_000, int(base["train.steps_per_epoch"] or 0),
                key=f"{key}:steps", help="train.steps_per_epoch: cap the optimiser steps per epoch (quick runs)"))
            values["dataset.max_samples"] = _none_if_zero(c5.number_input(
                "Max samples per split (0 = all)", 0, 10_000_000, int(base["dataset.max_samples"] or 0),
                key=f"{key}:max_samples", help="dataset.max_samples"))
        if "stage.checkpoint" in shown:
            default = base["stage.checkpoint"] or ""
            options = ([default] if default else []) + [r for r in checkpoint_runs if r != default]
            if not options:
                options = [""]
            c1, c2 = st.columns(2)
            pick = c1.selectbox("Checkpoint (run id or reference)", options, index=0, key=f"{key}:ckpt_pick",
                                help="stage.checkpoint: a run id (its best checkpoint), `<run id>/last.pth`, "
                                     "`latest:<template>` or a .pth file")
            typed = c2.text_input("…or a checkpoint file / reference", "", key=f"{key}:ckpt_text",
                                  help="wins over the choice on the left when filled")
            values["stage.checkpoint"] = typed.strip() or pick or None
        if "tta_ab.variants" in shown:
            st.markdown("**TTA variants** (tta_ab.variants; each is compared with TTA off)")
            edited = st.data_editor(
                pd.DataFrame(knobs.variants_to_rows(cfg), columns=["name", "scales", "hflip", "vflip"]),
                key=f"{key}:variants", num_rows="dynamic", hide_index=True, width="stretch",
                column_config={"scales": st.column_config.TextColumn("scales (comma-separated)"),
                               "hflip": st.column_config.CheckboxColumn("h-flip"),
                               "vflip": st.column_config.CheckboxColumn("v-flip")}, placeholder="–")
            values["tta_ab.variants"] = ("variants", _editor_rows(edited))
            values["tta_ab.threshold"] = float(st.number_input(
                "Keep threshold (mIoU points)", 0.0, 100.0, base["tta_ab.threshold"], step=0.1,
                key=f"{key}:threshold", help="tta_ab.threshold: a variant is kept only when it gains at least this"))
        if "eval.tta" in shown:
            c1, c2 = st.columns([3, 1])
            scales = c1.text_input("Evaluation TTA scales", ", ".join(f"{s:g}" for s in base["eval.tta"]["scales"]),
                                   key=f"{key}:tta_scales", help="eval.tta.scales (1.0 alone = TTA off)")
            hflip = c2.checkbox("h-flip", base["eval.tta"]["hflip"], key=f"{key}:tta_hflip", help="eval.tta.hflip")
            values["eval.tta"] = ("tta", scales, hflip)
        c1, c2, c3 = st.columns(3)
        if "eval.max_tiles" in shown:
            values["eval.max_tiles"] = _none_if_zero(c1.number_input(
                "Max evaluation tiles (0 = all)", 0, 10_000_000, int(base["eval.max_tiles"] or 0),
                key=f"{key}:max_tiles", help="eval.max_tiles"))
        if "refine.max_tiles" in shown:
            values["refine.max_tiles"] = _none_if_zero(c1.number_input(
                "Refinement tiles (0 = all)", 0, 10_000_000, int(base["refine.max_tiles"] or 0),
                key=f"{key}:refine_tiles", help="refine.max_tiles (the plan: 100 validation tiles first)"))
        if "refine.sam.checkpoint" in shown:
            values["refine.sam.checkpoint"] = c2.text_input(
                "SAM weights file", base["refine.sam.checkpoint"] or "", key=f"{key}:sam_ckpt",
                help="refine.sam.checkpoint: a local file; without it the SAM chains are skipped")
        values["runtime.gpus"] = int(c3.number_input("GPUs per job", 0, 64, base["runtime.gpus"], key=f"{key}:gpus",
                                                     help="runtime.gpus: > 1 runs under torchrun; 0 = a CPU slot"))
        extra = st.text_area("More overrides (`key=value`, one a line)", "", key=f"{key}:extra", height=80,
                             help="any config key, e.g. train.lr=1e-4 or augment.cutmix_p=0.2")

        extra = "\n".join([extra, *executor_fields(key, cfg)])       # where it runs: local or SLURM
        sweep = None
        if cfg.stage.kind in knobs.TRAIN_KINDS:
            sweep = sweep_fields(key, cfg)                 # "sweep these knobs over …" (its own submit button)
        b1, b2, _ = st.columns([1, 1, 4])
        check = b1.form_submit_button("Check", help="resolve the config with these knobs without launching")
        go = b2.form_submit_button(":material/rocket_launch: Launch", type="primary")
    action = "launch" if go else "check" if check else "sweep" if sweep and sweep["go"] else None
    result = _resolve(t, values, extra, action)
    result.sweep = sweep
    lr_preview(result.cfg or cfg, key)
    confirm_pending(t)                    # a gated launch of this template waiting for "Launch anyway"
    return result


def lr_preview(cfg: Config, key: str) -> None:
    """The per-iteration learning-rate curve the run will follow (training kinds), drawn before launch."""
    if cfg.stage.kind not in ("train", "distill"):
        return
    with st.expander(f"Learning-rate schedule: {cfg.train.lr_schedule}", expanded=False):
        try:
            st.plotly_chart(lr_figure(cfg), width="stretch", key=f"{key}:lr_curve")
        except ConfigError as exc:
            st.error(str(exc))


def _resolve(t: Template, values: dict[str, Any], extra: str, action: Optional[str]) -> FormResult:
    cfg = t.cfg
    try:
        plain: dict[str, Any] = {}
        for k, v in values.items():
            if isinstance(v, tuple) and v and v[0] == "rows":
                plain[k] = knobs.rows_to_schedule(v[1])
            elif isinstance(v, tuple) and v and v[0] == "variants":
                plain[k] = knobs.rows_to_variants(v[1])
            elif isinstance(v, tuple) and v and v[0] == "tta":
                plain[k] = {"scales": knobs.parse_scales(v[1], "eval.tta.scales"), "hflip": bool(v[2])}
            else:
                plain[k] = v
        overrides = knobs.to_overrides(cfg, plain) + knobs.parse_extra(extra)
        resolved = knobs.resolve(t.path, overrides)
    except (ConfigError, knobs.KnobError) as exc:
        return FormResult(action, [], None, str(exc))
    return FormResult(action, overrides, resolved, None)


def summary_line(result: FormResult) -> str:
    if result.cfg is None:
        return ""
    return f"run name `{run_name(result.cfg)}`"
