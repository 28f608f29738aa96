"""Plan: the plan's stages as a board. Each stage lists its templates with editable knobs and a Launch button;
live jobs refresh in a fragment; each stage shows its best result so far and its recent runs (cancel, resume)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.widgets import cluster, data, templates
from app.widgets.common import ACTIVE, PAGE_FILES, duration, guard, isnum, pct, status_text
from app.widgets.knob_form import render as knob_form
from app.widgets.knob_form import summary_line
from app.widgets.launch import cancel, launch, resume
from app.widgets.live import live_jobs
from app.widgets.nav import ensure_routed
from runners import api


@st.cache_data(show_spinner=False, ttl=30)
def _board(sig: tuple):
    return templates.discover()


def _settings_line() -> str:
    try:
        s = api.settings()
    except Exception as exc:  # noqa: BLE001 - shown, not fatal
        return f"scheduler settings unreadable: {exc}"
    gpus = ", ".join(s.gpus) if s.gpus else "none (CPU only)"
    return (f"Scheduler: GPUs {gpus}; {s.cpu_jobs} CPU job(s) at a time; jobs start in launch order as slots "
            f"free up and run detached (a browser refresh never stops them).") + cluster.executor_line()


ensure_routed()
st.title(":material/map: Plan")
st.caption(_settings_line())

board = _board(templates.signature())
runs = guard(data.runs, default=pd.DataFrame(), what="Reading the run list")
if runs is None:
    runs = pd.DataFrame()

flash = st.session_state.pop("plan_flash", None)
if flash:
    st.success(f"Launched `{flash['rid']}` ({flash['summary']}); follow it under Live jobs.",
               icon=":material/rocket_launch:")
    with st.expander("The same launch from a terminal", expanded=True):
        st.code(flash["command"], language="bash")

sweep_flash = st.session_state.pop("plan_sweep_flash", None)
if sweep_flash:
    st.success(f"Started sweep `{sweep_flash['sweep_id']}`: {sweep_flash['n_trials']} trial(s), "
               f"{sweep_flash['sampler']} sampler, {sweep_flash['pruner']} pruner, over "
               + ", ".join(f"`{k}`" for k in sweep_flash["keys"]) + ". Its driver runs detached and launches the "
               "trials as ordinary runs.", icon=":material/tune:")
    st.page_link("views/sweeps.py", label="Follow it on the Sweeps page", icon=":material/tune:",
                 query_params={"sweep": sweep_flash["sweep_id"]})
    with st.expander("The same sweep from a terminal", expanded=False):
        st.code(sweep_flash["command"], language="bash")

live_jobs()
cluster.cluster_queue()

# ---------------------------------------------------------------------------------------------------------- board
st.subheader("Stages")


def _best(stage: int) -> pd.Series | None:
    """The stage's best ranked evaluation on the validation split (store.ranking: a run's own result or the
    variant it adopted, full split, finished); the largest comparable tile set first."""
    if runs.empty:
        return None
    board = guard(data.ranking, "val", "miou", default=pd.DataFrame())
    if board is None or board.empty:
        return None
    ids = set(runs.loc[(runs["plan_stage"] == stage) & (runs["kind"] != "classify"), "run_id"])   # mIoU: segmentation
    r = board[board["run_id"].isin(ids) & board["rank"].notna()].copy()
    if r.empty:
        return None
    r["_n"] = r["tile_count"].fillna(r["n_images"]).fillna(0)
    top = r.sort_values(["_n", "miou"], ascending=[False, False]).iloc[0]
    return top.rename({"run_name": "name"}).copy()


def _health_summary() -> str | None:
    h = runs[(runs["kind"] == "health")] if not runs.empty else runs
    if h.empty:
        return None
    last = h.iloc[0]
    import store

    rows = guard(store.health, last["run_id"], default=pd.DataFrame())
    if rows is None or rows.empty:
        return f"{status_text(last['status'])} (no check results yet)"
    counts = rows["status"].value_counts()
    return " · ".join(f"{counts.get(s, 0)} {s}" for s in ("pass", "warn", "fail")) + f" — `{last['name']}`"


cols = st.columns(5)
for col, (stage, (name, _blurb)) in zip(cols, templates.STAGES.items()):
    with col.container(border=True):
        st.markdown(f"**{stage} · {name}**")
        n_t = len(board.get(stage, []))
        stage_runs = runs[runs["plan_stage"] == stage] if not runs.empty else runs
        n_active = int(stage_runs["status"].isin(ACTIVE).sum()) if not stage_runs.empty else 0
        st.caption(f"{n_t} template(s) · {len(stage_runs)} run(s) · {n_active} active")
        if stage == 0:
            summary = _health_summary()
            st.markdown(f"Latest checks: {summary}" if summary else "No health run yet.")
        else:
            best = _best(stage)
            if best is None:
                st.markdown("Best so far: —")
            else:
                st.markdown(f"Best so far: **mIoU ({best['split']}) {pct(best['miou'])}**, "
                            f"bIoU {pct(best['mbiou'])}  \n`{best['name']}`")
                st.caption(best["identity"])
                if st.button("Open best run", key=f"best_{stage}"):
                    st.switch_page(PAGE_FILES["detail"], query_params={"run": best["run_id"]})

# ---------------------------------------------------------------------------------------------------------- stages
succeeded_train = []
if not runs.empty:
    ok = runs[(runs["status"] == "succeeded") & runs["kind"].isin(["train", "distill"])]
    succeeded_train = list(ok["run_id"])

tab_names = [f"{s} · {name}" for s, (name, _) in templates.STAGES.items()]
# lazy tabs: only the open stage's forms are built (a stage can hold many templates)
tabs = st.tabs(tab_names, default=tab_names[1], key="plan_stage_tab", on_change="rerun")
for tab, (stage, (_name, blurb)) in zip(tabs, templates.STAGES.items()):
    if tab.open is False:
        continue
    with tab:
        st.markdown(f"*{blurb}*")
        items = board.get(stage, [])
        if not items:
            st.info(f"No template for stage {stage} under `configs/stage{stage}_*/` yet.")
        for t in items:
            head = f"{':material/star: ' if t.is_demo else ''}{t.label}  ·  `{t.kind}` on `{t.dataset}`"
            with st.expander(head, expanded=t.is_demo and stage == 1):
                st.caption(f"`{t.rel}` → run name `{t.run_name}`")
                if t.description:
                    st.markdown(t.description)
                if t.error:
                    st.error(f"This template does not load: {t.error}")
                    continue
                if t.summary:
                    st.dataframe(pd.DataFrame([t.summary]), hide_index=True, width="stretch", placeholder="–")
                if t.cfg is not None and getattr(t.cfg, "task", "segmentation") == "classification":
                    from app.widgets.classify_plan import classification_form  # the classification track

                    classification_form(t)
                    continue
                result = knob_form(t, succeeded_train)
                command = "mapsage run " + t.rel + "".join(f" \\\n  --set '{o}'" for o in result.overrides)
                if result.error:
                    st.error(result.error)
                elif result.action == "check":
                    st.markdown("Overrides: " + (" ".join(f"`--set {o}`" for o in result.overrides) or
                                                 "none (the template as is)") + f" → {summary_line(result)}")
                    st.code(command, language="bash")
                if result.action == "sweep" and result.error is None:
                    from app.widgets.sweep_form import start as start_sweep

                    started = start_sweep(t.rel, t.path, result.overrides, result.sweep)
                    if started:
                        st.session_state["plan_sweep_flash"] = started
                        st.rerun()
                if result.action == "launch" and result.error is None:
                    note = {"command": command, "summary": summary_line(result)}
                    rid = launch(t, result.overrides, flash=note)
                    if rid:
                        # shown after a full rerun, so the stage cards and Live jobs include the new job
                        st.session_state["plan_flash"] = {"rid": rid, **note}
                        st.rerun()

        # recent runs of this stage: open, cancel, resume
        stage_runs = runs[runs["plan_stage"] == stage].head(8) if not runs.empty else runs
        if not stage_runs.empty:
            st.markdown("**Recent runs of this stage**")
            for _, r in stage_runs.iterrows():
                rid = r["run_id"]
                c = st.columns([4, 2, 2, 1, 1, 1])
                c[0].markdown(f"`{r['name']}`  \n<small>`{rid}`</small>", unsafe_allow_html=True)
                c[1].markdown(status_text(r["status"]))
                c[2].markdown(f"mIoU ({r['split']}) {pct(r['best_val_miou'])}" if isnum(r["best_val_miou"])
                              else duration(r["duration_s"]))
                if c[3].button("Open", key=f"open_{stage}_{rid}"):
                    st.switch_page(PAGE_FILES["detail"], query_params={"run": rid})
                if r["status"] in ACTIVE:
                    if c[4].button("Cancel", key=f"cancel_{stage}_{rid}"):
                        got = cancel(rid)
                        if got:
                            st.toast(f"{rid}: {got}")
                elif r["kind"] in ("train", "distill") and r["status"] in ("failed", "cancelled", "died"):
                    if c[5].button("Resume", key=f"resume_{stage}_{rid}",
                                   help="a new run continuing from this run's last checkpoint"):
                        new = resume(rid)
                        if new:
                            st.success(f"Resumed as `{new}`.")
