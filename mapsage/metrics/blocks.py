"""Spatial blocks for the paired bootstrap: which tiles are resampled together.

Tiles cut from one scene are correlated (the same city, light, season and sensor), so a bootstrap that resamples
them one by one behaves as if the split held more independent evidence than it does. A block is a set of tiles
that travel together in a resample:

* ``group``: the tile's scene, read from its id with a regex (the dataset's ``split.group_regex``, whose named
  group ``group`` is the scene: ``Tile 3/image_part_001`` -> ``Tile 3``).
* ``grid``: a K×K grid over each scene. A tile's place in its scene comes from its id: ``.../<y>_<x>`` (pixel or
  cell coordinates, as sliding-window tiles are named) or a trailing part number (``image_part_005``: parts
  numbered 1..n² row by row over an n×n layout of the scene). Each scene is cut into K rows and K columns of
  blocks; tiles whose cell falls in one block travel together.
* ``tile``: no blocks (the tile-wise bootstrap).
* ``auto``: ``group`` when the tiles come from at least ``min_blocks`` scenes, else ``grid`` when places can be
  read (and give at least two blocks), else ``tile``, with a note saying why.

Pure Python (no torch): the app and reports use it too.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Optional

DEFAULT_GROUP_REGEX = r"^(?P<group>[^/]+)/"
BLOCK_BY = ("auto", "group", "grid", "tile")

_YX = re.compile(r"(\d+)_(\d+)$")
_PART = re.compile(r"(\d+)$")


@dataclass
class BlockPlan:
    by: str                                  # group | grid | tile (what was resampled)
    ids: Optional[dict[str, str]]            # tile -> block id (None: tile-wise)
    n_blocks: int
    n_tiles: int
    note: str = ""
    k: Optional[int] = None

    @property
    def label(self) -> str:
        if self.by == "group":
            return f"{self.n_blocks} scenes"
        if self.by == "grid":
            return f"{self.n_blocks} blocks ({self.k}×{self.k} grid per scene)"
        return f"{self.n_tiles} tiles"


def _group_of(tile: str, regex: re.Pattern) -> str:
    m = regex.search(tile)
    if m is None:
        return ""
    return m.groupdict().get("group") or m.group(0)


def _places(tiles: list[str]) -> Optional[dict[str, tuple[float, float]]]:
    """(row, col) of each tile within its scene, or None when the ids do not say."""
    out: dict[str, tuple[float, float]] = {}
    for t in tiles:
        m = _YX.search(t)
        if m:
            out[t] = (float(m.group(1)), float(m.group(2)))
    if len(out) == len(tiles):
        return out
    return None


def _part_places(scene_tiles: list[str]) -> Optional[dict[str, tuple[float, float]]]:
    nums = {}
    for t in scene_tiles:
        m = _PART.search(t)
        if not m:
            return None
        nums[t] = int(m.group(1))
    if len(set(nums.values())) != len(nums):
        return None
    lo, hi = min(nums.values()), max(nums.values())
    side = int(round(math.sqrt(len(nums))))
    if hi - lo + 1 != len(nums) or side * side != len(nums):
        return None                           # only a complete square of parts numbered row by row is a layout
    return {t: (float((n - lo) // side), float((n - lo) % side)) for t, n in nums.items()}


def _grid(tiles: list[str], scenes: dict[str, list[str]], k: int) -> Optional[dict[str, str]]:
    ids: dict[str, str] = {}
    yx = _places(tiles)
    for scene, members in scenes.items():
        places = {t: yx[t] for t in members} if yx is not None else _part_places(members)
        if places is None:
            return None
        rows = sorted({p[0] for p in places.values()})
        cols = sorted({p[1] for p in places.values()})
        ri = {r: i for i, r in enumerate(rows)}
        ci = {c: i for i, c in enumerate(cols)}
        for t, (r, c) in places.items():
            br = ri[r] * k // len(rows)
            bc = ci[c] * k // len(cols)
            ids[t] = f"{scene}#{br},{bc}"
    return ids


def block_plan(tiles: Iterable[str], by: str = "auto", group_regex: Optional[str] = None, k: int = 2,
               min_blocks: int = 8) -> BlockPlan:
    """Blocks for ``tiles`` (see the module doc)."""
    tiles = [str(t) for t in tiles]
    if by not in BLOCK_BY:
        raise ValueError(f"block_by must be one of {BLOCK_BY}, got {by!r}")
    if k < 1:
        raise ValueError(f"the grid needs k >= 1 blocks per side, got {k}")
    n = len(tiles)
    if by == "tile":
        return BlockPlan("tile", None, n, n)
    regex = re.compile(group_regex or DEFAULT_GROUP_REGEX)
    scenes: dict[str, list[str]] = defaultdict(list)
    for t in tiles:
        scenes[_group_of(t, regex)].append(t)
    if by == "group" or (by == "auto" and len(scenes) >= min_blocks):
        return BlockPlan("group", {t: _group_of(t, regex) for t in tiles}, len(scenes), n,
                         note="" if len(scenes) >= min_blocks else
                         f"only {len(scenes)} scenes: a bootstrap over so few blocks is itself unreliable")
    ids = _grid(tiles, scenes, k)
    if ids is not None:
        nb = len(set(ids.values()))
        if by == "grid" or nb >= 2:
            note = "" if by == "grid" else (f"{len(scenes)} scene(s) (< {min_blocks}): resampling a {k}×{k} grid "
                                            f"of blocks per scene instead")
            return BlockPlan("grid", ids, nb, n, note=note, k=k)
    if by == "grid":
        raise ValueError("block_by grid: the tile ids do not say where a tile lies in its scene (expected "
                         "'<y>_<x>' or a trailing part number)")
    return BlockPlan("tile", None, n, n, note=f"{len(scenes)} scene(s) and no tile places in the ids: resampling "
                                               f"tiles (the interval may be too narrow for correlated tiles)")
