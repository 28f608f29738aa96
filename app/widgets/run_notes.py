"""Tags and the note of one run, editable on Run detail (stored by ``store.tags``; the Runs page filters,
searches and groups by them)."""
from __future__ import annotations

import streamlit as st

from .common import guard


def tags_and_note(run_id: str) -> None:
    import store.tags as tags

    have = guard(tags.tags_of, run_id, default=[]) or []
    known = sorted(set(guard(tags.all_tags, default=[]) or []) | set(have))
    note = guard(tags.note_of, run_id, default="") or ""
    label = "Tags and note" + (f" · {', '.join(have)}" if have else "") + (" · 📝" if note else "")
    with st.expander(label, icon=":material/sell:", expanded=False):
        with st.form(f"run_notes:{run_id}", border=False):
            picked = st.multiselect("Tags", known, default=have, accept_new_options=True, key=f"run_tags:{run_id}",
                                    help="pick or type new tags (letters, digits, -_.:/+)")
            text = st.text_area("Note", note, key=f"run_note:{run_id}", height=100,
                                placeholder="what this run tried, what it showed, what to do next")
            if st.form_submit_button("Save tags and note", icon=":material/save:"):
                ok = guard(tags.replace_tags, run_id, picked, default=None, what="Saving the tags") is not None
                if ok:
                    guard(tags.set_note, run_id, text, what="Saving the note")
                    st.toast("Saved tags and note", icon=":material/check:")
                    st.rerun()
