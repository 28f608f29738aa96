"""Mask decoding on the real data: all 72 Dubai masks (colour codes, palette PNGs), LoveDA ids, index masks,
unknown colours/values, and the config errors of the class maps."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mapsage.config import ConfigError
from mapsage.data import (
    ColorMaskDecoder,
    IndexMaskDecoder,
    build_dataset,
    class_pixel_counts,
    color_hex,
    decoder_for,
    load_mask,
    load_mask_with_stats,
    pack_rgb,
    parse_color,
    read_color_mask,
    sample_class_counts,
    summarize,
)
from mapsage.errors import DataError
from tests.support.data import (
    DUBAI_COLOURS,
    DUBAI_README_IGNORED,
    DUBAI_README_SHARES,
    DUBAI_ROOT,
    LOVEDA_CLASSES,
    LOVEDA_ROOT,
    copy_dubai_tiles,
    dubai_cfg,
    dubai_full_scan,
    loveda_cfg,
)


def test_all_72_dubai_pairs_decode_with_the_readme_shares():
    ds, scans = dubai_full_scan()
    assert len(ds) == 72 and len(scans) == 72
    assert not [p for s in scans for p in s.problems]
    report = summarize(scans, ds.classes, ["#9B9B9B", "#000000"])
    assert report["unknown"] == {}
    shares = {r["name"]: 100 * r["share"] for r in report["classes"]}      # share of ALL mask pixels
    for name, expected in DUBAI_README_SHARES.items():
        assert shares[name] == pytest.approx(expected, abs=0.05), name
    for colour, expected in DUBAI_README_IGNORED.items():
        assert 100 * report["ignored"][colour]["share"] == pytest.approx(expected, abs=0.05), colour
    total = report["pixels"]
    assert total == sum(s.image_size[0] * s.image_size[1] for s in scans)     # every pixel is accounted for
    assert report["labelled_pixels"] + report["ignored_pixels"] == total


def test_palette_masks_of_tiles_2_and_4_decode_through_their_palette():
    ds = decoder_for(dubai_cfg())
    palette_files = sorted(p for t in ("Tile 2", "Tile 4") for p in (DUBAI_ROOT / t / "masks").glob("*.png"))
    assert len(palette_files) == 18
    index_of_class: dict[str, set[int]] = {}
    saw_index_differs = False
    for path in palette_files:
        img = Image.open(path)
        assert img.mode == "P"
        idx = np.asarray(img)
        pal = np.asarray(img.getpalette(), np.uint8).reshape(-1, 3)
        rgb_via_palette = pal[idx]                                  # decode by hand, independently of the code
        assert np.array_equal(read_color_mask(path), rgb_via_palette)
        mask, stats = ds.load(path)
        assert not stats.unknown
        expected = np.full(idx.shape, 255, np.uint8)
        classes = ["water", "land", "road", "building", "vegetation"]
        for hexcol, name in DUBAI_COLOURS.items():
            hit = np.all(rgb_via_palette == np.array(parse_color(hexcol, "t")), axis=-1)
            expected[hit] = classes.index(name)
            index_of_class.setdefault(name, set()).update(np.unique(idx[hit]).tolist())
        assert np.array_equal(mask, expected), path
        saw_index_differs |= bool(np.any((mask != 255) & (mask != idx)))
    # the same class is stored under different palette indices in different files: an index is never a class id
    assert any(len(v) > 1 for v in index_of_class.values())
    assert saw_index_differs


def test_unknown_colour_is_an_error_listing_colours_and_counts(tmp_path):
    root = copy_dubai_tiles(tmp_path, tiles=("Tile 8",), parts=(3,))
    mask_path = root / "Tile 8/masks/image_part_003.png"
    cfg = dubai_cfg(f"dataset.root={root.parent / 'Semantic segmentation dataset'}", "dataset.ignore_colors=[]")
    rgb = read_color_mask(mask_path)
    black = int(np.all(rgb == 0, axis=-1).sum())
    grey = int(np.all(rgb == 0x9B, axis=-1).sum())
    assert black > 0.15 * rgb.shape[0] * rgb.shape[1]       # README: ~17 % of this part is black
    with pytest.raises(DataError) as info:
        load_mask(mask_path, cfg)
    msg = str(info.value)
    assert str(mask_path) in msg
    assert f"#000000: {black} px" in msg and f"#9B9B9B: {grey} px" in msg
    assert "dataset.ignore_colors" in msg and "dataset.color_map" in msg
    # the same through the dataset (what training would hit)
    ds = build_dataset(cfg, "train")
    with pytest.raises(DataError, match="not named by the config"):
        ds[0]
    # mapped to ignore explicitly: no error, and the affected pixels are counted by colour
    ok_cfg = dubai_cfg(f"dataset.root={root}")
    mask, stats = load_mask_with_stats(mask_path, ok_cfg)
    assert stats.ignored == {"#000000": black, "#9B9B9B": grey}
    assert int((mask == 255).sum()) == black + grey


def test_colour_decoder_is_exact_on_every_pixel_of_a_real_mask():
    path = DUBAI_ROOT / "Tile 3/masks/image_part_005.png"
    rgb = read_color_mask(path)
    mask = load_mask(path, dubai_cfg())
    classes = ["water", "land", "road", "building", "vegetation"]
    lookup = {parse_color(c, "t"): classes.index(n) for c, n in DUBAI_COLOURS.items()}
    lookup[(0x9B, 0x9B, 0x9B)] = 255
    lookup[(0, 0, 0)] = 255
    flat = rgb.reshape(-1, 3)
    expected = np.array([lookup[tuple(int(v) for v in px)] for px in flat[:: 97]], np.uint8)   # pure-Python path
    assert np.array_equal(mask.reshape(-1)[:: 97], expected)
    assert mask.dtype == np.uint8 and mask.shape == rgb.shape[:2]


def test_pack_rgb_matches_arithmetic():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 41, 3), dtype=np.uint8)
    ref = rgb[..., 0].astype(np.uint32) | (rgb[..., 1].astype(np.uint32) << 8) | (rgb[..., 2].astype(np.uint32) << 16)
    assert np.array_equal(pack_rgb(rgb), ref)
    assert color_hex((132, 41, 246)) == "#8429F6" and parse_color("8429f6", "k") == (132, 41, 246)


@pytest.mark.parametrize("override, pattern", [
    ("dataset.color_map={'#8429F6': land, '#E2A929': watr}", r"class 'watr' is not in dataset.classes"),
    ("dataset.color_map={'#8429F6': land}", r"maps no colour to class\(es\) \['water', 'road'"),
    ("dataset.ignore_colors=['#8429F6']", r"also mapped to a class"),
    ("dataset.ignore_colors=['#12345']", r"dataset.ignore_colors\[0\]: '#12345' is not a colour"),
    ("dataset.color_map={}", r"dataset.color_map is empty"),
])
def test_colour_map_config_errors(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        ColorMaskDecoder(dubai_cfg(override).dataset)


# -------------------------------------------------------------------------------------------------------------
# LoveDA and index masks


def test_loveda_ids_map_to_classes_in_loveda_order():
    cfg = loveda_cfg()
    assert cfg.dataset.classes == LOVEDA_CLASSES
    path = LOVEDA_ROOT / "Train/Rural/masks_png/1.png"
    raw = np.asarray(Image.open(path))
    mask = load_mask(path, cfg)
    for raw_id in range(1, 8):
        assert np.all(mask[raw == raw_id] == raw_id - 1)
    ds = build_dataset(cfg, "train")
    counts = class_pixel_counts(ds)
    raw_all = np.concatenate([np.asarray(Image.open(s.mask_path)).ravel() for s in ds.samples])
    assert counts.tolist() == [int((raw_all == k).sum()) for k in range(1, 8)]
    assert sample_class_counts(ds).shape == (2, 7)


def test_loveda_id_0_is_ignored(tmp_path):
    raw = np.asarray(Image.open(LOVEDA_ROOT / "Val/Rural/masks_png/2.png")).copy()
    raw[:100, :] = 0                       # no-data strip, as LoveDA marks it
    path = tmp_path / "2.png"
    Image.fromarray(raw).save(path)
    mask, stats = load_mask_with_stats(path, loveda_cfg())
    assert np.all(mask[:100] == 255)
    assert np.array_equal(mask[100:], raw[100:] - 1)
    assert stats.ignored == {"value 0": 100 * 1024}
    assert stats.class_counts.sum() == 1024 * 1024 - 100 * 1024


def test_unknown_index_value_is_an_error(tmp_path):
    raw = np.asarray(Image.open(LOVEDA_ROOT / "Val/Rural/masks_png/2.png")).copy()
    raw[0, :10] = 9
    path = tmp_path / "bad.png"
    Image.fromarray(raw).save(path)
    with pytest.raises(DataError, match=r"bad.png: 1 mask value\(s\) not named by the config: value 9: 10 px"):
        load_mask(path, loveda_cfg())
    mask, stats = load_mask_with_stats(path, loveda_cfg(), strict=False)
    assert stats.unknown == {"value 9": 10} and np.all(mask[0, :10] == 255)


def test_index_mask_identity_and_palette_png(tmp_path):
    # a VOC-style palette PNG holding class indices: for an index mask the stored index IS the value
    cfg = loveda_cfg("dataset.type=index_mask", "dataset.value_map={}", "dataset.ignore_values=[]",
                     "dataset.split.method=by_group")
    dec = IndexMaskDecoder(cfg.dataset)
    arr = np.array([[0, 1, 6], [255, 2, 3]], np.uint8)
    img = Image.fromarray(arr, mode="P")
    img.putpalette([v for i in range(256) for v in (i, 255 - i, 7)])
    img.save(tmp_path / "p.png")
    mask, stats = dec.load(tmp_path / "p.png")
    assert mask.tolist() == arr.tolist()                     # identity; 255 stays ignore
    assert stats.ignored == {"value 255": 1}
    with pytest.raises(DataError, match="value 7"):
        dec.decode(np.array([[7]], np.uint8), "x.png")
    # 16-bit values through value_map
    cfg16 = loveda_cfg("dataset.value_map={1000: 0, 2000: 6}", "dataset.ignore_values=[0]")
    raw16 = np.array([[1000, 2000], [0, 1000]], np.uint16)
    Image.fromarray(raw16).save(tmp_path / "m16.png")
    mask16, st16 = IndexMaskDecoder(cfg16.dataset).load(tmp_path / "m16.png")
    assert mask16.tolist() == [[0, 6], [255, 0]] and st16.ignored == {"value 0": 1}


def test_index_mask_rejects_colour_images_and_bad_maps(tmp_path):
    Image.open(DUBAI_ROOT / "Tile 1/masks/image_part_001.png").save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="colour image .* set dataset.type: color_mask"):
        load_mask(tmp_path / "rgb.png", loveda_cfg())
    with pytest.raises(ConfigError, match=r"dataset.value_map\[3\]: class id 9 is outside 0..6"):
        IndexMaskDecoder(loveda_cfg("dataset.value_map={3: 9}").dataset)
    with pytest.raises(ConfigError, match=r"both name raw value\(s\) \[1\]"):
        IndexMaskDecoder(loveda_cfg("dataset.ignore_values=[0, 1]").dataset)
