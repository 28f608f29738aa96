"""Tags and notes on runs: written by ``mapsage tag`` / ``mapsage note`` and the app (never from event files, so
a rebuild keeps them). A tag is a short label (letters, digits, ``-_.:/+``, at most 40 characters, stored in lower
case); a run has any number of tags and one note (free text, at most 10 000 characters)."""
from __future__ import annotations

import getpass
import re
import time
from typing import Sequence

import pandas as pd

from mapsage.errors import UserError

from .db import read_connection, write_connection
from .schema import ensure_schema

TAG_RE = re.compile(r"^[a-z0-9][a-z0-9_.:/+-]{0,39}$")
MAX_NOTE = 10_000


class BadTag(UserError):
    pass


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def clean_tag(tag: str) -> str:
    t = str(tag).strip().lower()
    if not TAG_RE.match(t):
        raise BadTag(f"tag {tag!r}: use 1-40 letters, digits or -_.:/+ (starting with a letter or digit), e.g. "
                     f"'baseline' or 'lr:8e-4'")
    return t


def _known_run(con, run_id: str) -> None:
    if not con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone():
        raise UserError(f"no run {run_id!r} in the store (see `mapsage runs list`)")


def set_tags(run_id: str, add: Sequence[str] = (), remove: Sequence[str] = (), by: str | None = None) -> list[str]:
    """Add and remove tags of a run; returns its tags afterwards (sorted)."""
    add = [clean_tag(t) for t in add]
    remove = [clean_tag(t) for t in remove]
    ensure_schema()
    with write_connection() as con:
        _known_run(con, run_id)
        con.execute("BEGIN TRANSACTION")
        for t in remove:
            con.execute("DELETE FROM run_tags WHERE run_id = ? AND tag = ?", [run_id, t])
        for t in add:
            con.execute("INSERT INTO run_tags VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        [run_id, t, by or _who(), time.time()])
        con.execute("COMMIT")
        rows = con.execute("SELECT tag FROM run_tags WHERE run_id = ? ORDER BY tag", [run_id]).fetchall()
    return [r[0] for r in rows]


def replace_tags(run_id: str, tags: Sequence[str], by: str | None = None) -> list[str]:
    """Make the run's tags exactly ``tags``."""
    wanted = {clean_tag(t) for t in tags}
    have = set(tags_of(run_id))
    return set_tags(run_id, add=sorted(wanted - have), remove=sorted(have - wanted), by=by)


def set_note(run_id: str, note: str, by: str | None = None) -> None:
    """Replace the run's note (an empty note removes it)."""
    note = (note or "").strip()
    if len(note) > MAX_NOTE:
        raise UserError(f"note: {len(note)} characters, more than {MAX_NOTE}; shorten it")
    ensure_schema()
    with write_connection() as con:
        _known_run(con, run_id)
        if note:
            con.execute("INSERT INTO run_notes VALUES (?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
                        "note = excluded.note, edited_by = excluded.edited_by, ts = excluded.ts",
                        [run_id, note, by or _who(), time.time()])
        else:
            con.execute("DELETE FROM run_notes WHERE run_id = ?", [run_id])


def tags_of(run_id: str) -> list[str]:
    ensure_schema()
    with read_connection() as con:
        return [r[0] for r in con.execute("SELECT tag FROM run_tags WHERE run_id = ? ORDER BY tag",
                                          [run_id]).fetchall()]


def note_of(run_id: str) -> str:
    ensure_schema()
    with read_connection() as con:
        row = con.execute("SELECT note FROM run_notes WHERE run_id = ?", [run_id]).fetchone()
    return row[0] if row else ""


def annotations(run_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per run with tags or a note: ``run_id``, ``tags`` (sorted list), ``tags_text`` ("a, b"),
    ``note``."""
    ensure_schema()
    where, params = "", []
    if run_ids is not None:
        ids = list(run_ids)
        if not ids:
            return pd.DataFrame(columns=["run_id", "tags", "tags_text", "note"])
        where = f" WHERE run_id IN ({', '.join('?' * len(ids))})"
        params = ids
    sql = """
        WITH t AS (SELECT run_id, list(tag ORDER BY tag) AS tags FROM run_tags GROUP BY run_id),
             ids AS (SELECT run_id FROM t UNION SELECT run_id FROM run_notes)
        SELECT ids.run_id, coalesce(t.tags, []) AS tags, n.note
        FROM ids LEFT JOIN t USING (run_id) LEFT JOIN run_notes n USING (run_id)
    """
    with read_connection() as con:
        df = con.execute(f"SELECT * FROM ({sql}){where} ORDER BY run_id", params).df()
    df["tags"] = [list(t) if t is not None else [] for t in df["tags"]]
    df["tags_text"] = [", ".join(t) for t in df["tags"]]
    df["note"] = df["note"].fillna("")
    return df[["run_id", "tags", "tags_text", "note"]]


def all_tags() -> list[str]:
    ensure_schema()
    with read_connection() as con:
        return [r[0] for r in con.execute("SELECT DISTINCT tag FROM run_tags ORDER BY tag").fetchall()]


def search(text: str) -> list[str]:
    """Runs whose tags or note contain ``text`` (case-insensitive)."""
    t = f"%{(text or '').strip().lower()}%"
    ensure_schema()
    with read_connection() as con:
        rows = con.execute("SELECT run_id FROM run_tags WHERE tag LIKE ? UNION SELECT run_id FROM run_notes "
                           "WHERE lower(note) LIKE ? ORDER BY 1", [t, t]).fetchall()
    return [r[0] for r in rows]
