"""``mapsage tag RUN [--add T ...] [--remove T ...]`` and ``mapsage note RUN [TEXT | --clear]``: tags and notes on
runs (stored in the workspace's store; the Runs page filters and groups by them; ``mapsage tag --find TEXT``
searches tags and notes)."""
from __future__ import annotations

from mapsage.errors import UserError
from mapsage.runids import is_run_id
from mapsage.workspace import run_dir


def register(sub) -> None:
    p = sub.add_parser("tag", help="add, remove or list a run's tags; --find searches tags and notes")
    p.add_argument("run_id", nargs="?")
    p.add_argument("--add", action="append", default=[], metavar="TAG")
    p.add_argument("--remove", action="append", default=[], metavar="TAG")
    p.add_argument("--find", default=None, metavar="TEXT", help="list the runs whose tags or note contain TEXT")
    p.set_defaults(func=_tag)
    p = sub.add_parser("note", help="show or set a run's note")
    p.add_argument("run_id")
    p.add_argument("text", nargs="?", default=None, help="the new note (replaces the old one)")
    p.add_argument("--clear", action="store_true", help="remove the note")
    p.set_defaults(func=_note)


def _tag(args) -> int:
    from store import tags as ann

    if args.find is not None:
        for rid in ann.search(args.find):
            print(rid)
        return 0
    if not args.run_id:
        raise UserError("mapsage tag: name a run (or --find TEXT)")
    import store

    if _is_folder(args.run_id):              # a run that just ended: in the store before it is tagged
        store.ingest_run(args.run_id, wait=True)
    tags = ann.set_tags(args.run_id, add=args.add, remove=args.remove) if (args.add or args.remove) \
        else ann.tags_of(args.run_id)
    print(", ".join(tags) if tags else "(no tags)")
    return 0


def _is_folder(run_id: str) -> bool:
    return is_run_id(run_id) and run_dir(run_id).is_dir()


def _note(args) -> int:
    from store import tags as ann

    if args.clear or args.text is not None:
        import store

        if _is_folder(args.run_id):
            store.ingest_run(args.run_id, wait=True)
        ann.set_note(args.run_id, "" if args.clear else args.text)
    print(ann.note_of(args.run_id) or "(no note)")
    return 0
