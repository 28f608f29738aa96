"""Run detail's "Fine-tune at a new crop size": one click queues a training run that starts from this run's weights
(``model.init_from=<run>``, encoder and decoder) at a larger crop, with the run's own resolved config otherwise.

The new run's config is the finished run's ``config.yaml`` snapshot with these overrides only:

* ``model.init_from=<run id>`` (the run's best checkpoint, ``model.init_weights`` as the run had it);
* ``stage.name=<name>-ft<N>`` when the run had a ``stage.name`` (else the descriptive name carries the new size);
* ``augment.crop_size=[N, N]``, and an empty ``augment.crop_schedule`` / ``augment.crop_sizes`` (a schedule would
  otherwise decide the size);
* ``eval.tile`` / ``eval.stride`` scaled by the same factor when the run evaluated in sliding windows of its crop
  size (windows follow the training crop).

The default size is 2x the run's crop below 512 px (the demo's 256 -> 512) and 1.5x from 512 px (512 -> 768, the
LoveDA plan's "fine-tune at 768"), a multiple of 32. The launch goes through :func:`app.widgets.launch.launch`, so the
health gate asks first exactly as on the Plan board; the job records the run as its parent
(``parent_relation: warm_start``, set by ``runners.jobs.submit`` from ``model.init_from``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import streamlit as st

from mapsage.config import PROJECT_ROOT, load_config
from mapsage.errors import UserError
from mapsage.workspace import run_dir

from .common import show_error
from .launch import confirm_pending, launch
from .templates import Template


def default_crop(crop: int) -> int:
    """The suggested fine-tuning crop for a run trained at ``crop`` px (see the module doc)."""
    grown = crop * 2 if crop < 512 else crop * 1.5
    return int(-(-grown // 32) * 32)


def overrides_for(run_id: str, cfg, crop: int) -> list[str]:
    """The ``--set`` overrides that turn the run's resolved config into the fine-tuning run's."""
    old = list(cfg.augment.crop_size)
    old = old * 2 if len(old) == 1 else old
    out = [f"model.init_from={run_id}", f"augment.crop_size=[{crop}, {crop}]", "augment.crop_schedule=[]",
           "augment.crop_sizes=[]"]
    if cfg.stage.name:                        # a named run: the fine-tuning run is named after it, with its size
        out.append(f"stage.name={cfg.stage.name}-ft{crop}")
    ev = cfg.eval
    if ev.mode == "slide" and list(ev.tile) == old and old[0] > 0:
        f = crop / old[0]
        stride = [max(1, int(round(s * f))) for s in ev.stride]
        out += [f"eval.tile=[{crop}, {crop}]", f"eval.stride=[{stride[0]}, {stride[-1]}]"]
    return out


def run_template(run_id: str) -> Optional[Template]:
    """The finished run's resolved config as a launchable template (its ``config.yaml`` snapshot)."""
    path = Path(run_dir(run_id)) / "config.yaml"
    cfg = load_config(path, [])
    try:
        rel = str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        rel = str(path)
    return Template(path=path, rel=rel, plan_stage=int(cfg.stage.plan_stage or 0), kind=cfg.stage.kind,
                    title=cfg.stage.title or run_id, description="", dataset=cfg.dataset.name, run_name=run_id,
                    cfg=cfg)


def warm_start_action(rid: str) -> Optional[str]:
    """Draw the action for the succeeded training run ``rid``; returns the new run id once one is queued."""
    try:
        tpl = run_template(rid)
        from mapsage.models.warm_start import resolve_source
        source = resolve_source(rid, tpl.cfg.model.init_weights)
    except UserError as exc:
        st.caption(f"Fine-tuning from this run is not possible: {exc}")
        return None
    done = confirm_pending(tpl)                  # the health gate's question, when a launch is waiting on it
    if done:
        return done
    cfg = tpl.cfg
    crop = int(cfg.augment.crop_size[0])
    with st.container(border=True):
        st.markdown("**Fine-tune at a new crop size**")
        c1, c2 = st.columns([1, 2], vertical_alignment="bottom")
        new = int(c1.number_input("New crop (px)", min_value=32, max_value=8192, step=32,
                                  value=default_crop(crop), key=f"warm_crop:{rid}",
                                  help="square crop of the new run; larger crops need more memory per batch"))
        overrides = overrides_for(rid, cfg, new)
        go = c2.button(f"Fine-tune at {new} px", key=f"warm_go:{rid}", icon=":material/zoom_out_map:",
                       help="queue a training run with this run's config, starting from its weights")
        st.caption(f"From `{source.name}` of this run (trained at {crop} px); the same config otherwise: "
                   + ", ".join(f"`{o}`" for o in overrides))
    if not go:
        return None
    try:
        new_rid = launch(tpl, overrides)
    except UserError as exc:                 # launch reports config errors itself; anything else that is the user's
        show_error(exc, f"Cannot fine-tune from {rid}")
        return None
    if new_rid:
        st.success(f"Fine-tuning queued as `{new_rid}` (warm start from `{rid}` at {new} px).")
    return new_rid
