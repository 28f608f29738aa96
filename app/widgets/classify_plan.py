"""The Plan board's classification track: a template of ``task: classification`` gets its own knobs (model, local
weights, resolution, epochs, batch, LR, loss, sampler, Mixup/CutMix) and launches one run or a k-fold group
(``runners.groups.launch_group``, as ``mapsage run CONFIG --folds K``)."""
from __future__ import annotations

import streamlit as st

from app.widgets.common import show_error
from mapsage.config import ConfigError, to_dict
from mapsage.errors import UserError


def classification_form(t) -> None:
    cfg = t.cfg
    c, tr = cfg.classify, cfg.train
    key = f"cls_{t.rel}"
    with st.form(key=key, border=True):
        a, b, d = st.columns(3)
        model = a.text_input("timm model", c.model, key=key + "_model",
                             help="any timm name; weights never download (classify.model)")
        pre = b.text_input("Pretrained weights file", c.pretrained, key=key + "_pre",
                           help="a local file, or none (classify.pretrained)")
        size = d.number_input("Image size (px)", 16, 1024, int(c.img_size), step=16, key=key + "_size")
        a, b, d, e = st.columns(4)
        epochs = a.number_input("Epochs", 1, 500, int(tr.epochs), key=key + "_ep")
        batch = b.number_input("Batch", 1, 1024, int(tr.batch_size), key=key + "_bs")
        lr = d.number_input(f"LR (reference, x B/{tr.base_batch})", 1e-6, 1.0, float(tr.lr), format="%.5f", key=key + "_lr")
        losses = ["lsce", "ce", "focal", "balanced_softmax"]
        loss = e.selectbox("Loss", losses, index=losses.index(c.loss), key=key + "_loss")
        a, b, d, e = st.columns(4)
        samplers = ["uniform", "effective_number", "class_balanced", "repeat_factor"]
        sampler = a.selectbox("Sampler", samplers, index=samplers.index(cfg.augment.sampler.kind),
                              key=key + "_sampler", help="never together with balanced_softmax")
        mixup = b.number_input("Mixup alpha", 0.0, 5.0, float(c.mixup_alpha), step=0.1, key=key + "_mix")
        cutmix = d.number_input("CutMix alpha", 0.0, 5.0, float(c.cutmix_alpha), step=0.1, key=key + "_cut")
        folds = e.number_input("Folds (0: one run)", 0, 10, 5, key=key + "_folds",
                               help="k-fold CV grouped by source tile, stratified by class")
        go_one = st.form_submit_button("Launch one run", type="secondary")
        go_cv = st.form_submit_button("Launch the k-fold group", type="primary")
    overrides = [f"classify.model={model}", f"classify.pretrained={pre or 'none'}", f"classify.img_size={int(size)}",
                 f"train.epochs={int(epochs)}", f"train.batch_size={int(batch)}", f"train.lr={lr:g}",
                 f"classify.loss={loss}", f"augment.sampler.kind={sampler}", f"classify.mixup_alpha={mixup:g}",
                 f"classify.cutmix_alpha={cutmix:g}"]
    changed = _changed(cfg, overrides)
    cmd = f"mapsage run {t.rel}" + (f" --folds {int(folds)}" if folds else "") + "".join(
        f" \\\n  --set '{o}'" for o in changed)
    st.code(cmd, language="bash")
    if not (go_one or go_cv):
        return
    try:
        if go_cv and folds >= 2:
            from runners.groups import launch_group

            gid, rids = launch_group(t.path, changed, folds=int(folds))
            st.success(f"Queued group `{gid}`: {len(rids)} runs (one per fold). The Runs page ranks it as mean ± "
                       f"sd of top-1 and macro F1.", icon=":material/rocket_launch:")
        else:
            from app.widgets.launch import launch

            rid = launch(t, changed)
            if rid:
                st.success(f"Launched `{rid}`.", icon=":material/rocket_launch:")
    except (ConfigError, UserError) as exc:
        show_error(exc, f"Cannot launch {t.rel}")


def _changed(cfg, overrides: list[str]) -> list[str]:
    """The overrides whose value differs from the template's."""

    d = to_dict(cfg)
    out = []
    for o in overrides:
        k, _, v = o.partition("=")
        cur = d
        for part in k.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if str(cur) != v and not (isinstance(cur, float) and f"{cur:g}" == v):
            out.append(o)
    return out
