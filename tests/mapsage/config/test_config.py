"""The config system: _base_ inheritance, merging, _replace_, overrides, typed validation, hints, hash, run name,
saving with the code commit."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from mapsage.config import CONFIGS_DIR, ConfigError, config_hash, load_config, run_name, save_resolved, to_dict
from mapsage.config import core as config_core
from mapsage.config.schema import Config
from tests.support.data import DUBAI_CONFIG, LOVEDA_CONFIG

DATASET_YAML = """
dataset:
  name: toy
  type: index_mask
  root: tests/data/loveda
  classes: [a, b, c]
  value_map: {1: 0, 2: 1, 3: 2}
  ignore_values: [0]
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def tree(tmp_path):
    """A small config tree: two bases (dataset, model+schedule) and a child that inherits both."""
    write(tmp_path / "_base_/ds.yaml", DATASET_YAML)
    write(tmp_path / "_base_/sched.yaml", """
        train: {epochs: 50, batch_size: 8, lr: 6.0e-5, ema: {enabled: true, decay: 0.999}}
        augment: {crop_size: [512, 512], scale_range: [0.5, 2.0]}
        eval: {tta: {scales: [1.0], hflip: false}}
        """)
    write(tmp_path / "_base_/model.yaml", """
        model: {arch: segformer, encoder: mit_b2}
        train: {epochs: 80}
        """)
    child = write(tmp_path / "exp/child.yaml", """
        _base_: [../_base_/ds.yaml, ../_base_/sched.yaml, ../_base_/model.yaml]
        train: {batch_size: 4, ema: {decay: 0.99}}
        """)
    return tmp_path, child


# -------------------------------------------------------------------------------------------------------------
# inheritance, merging, overrides


def test_list_of_bases_merge_left_to_right_then_child(tree):
    _, child = tree
    cfg = load_config(child)
    assert cfg.dataset.name == "toy" and cfg.dataset.classes == ["a", "b", "c"]
    assert cfg.model.encoder == "mit_b2"
    assert cfg.train.epochs == 80            # the later base wins over the earlier one
    assert cfg.train.batch_size == 4         # the child wins over its bases
    assert cfg.train.lr == pytest.approx(6e-5)   # untouched keys of a merged section survive
    assert cfg.train.ema.enabled is True and cfg.train.ema.decay == pytest.approx(0.99)   # deep merge
    assert cfg.augment.crop_size == [512, 512]
    assert cfg.train.weight_decay == pytest.approx(0.01)   # schema default where no file sets it


def test_single_string_base_and_nested_inheritance(tmp_path):
    write(tmp_path / "a.yaml", DATASET_YAML + "train: {epochs: 3}\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\ntrain: {batch_size: 2}\n")
    c = write(tmp_path / "c.yaml", "_base_: b.yaml\ntrain: {epochs: 7}\n")
    cfg = load_config(c)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.dataset.name) == (7, 2, "toy")


def test_lists_are_replaced_not_appended(tree):
    tmp, _ = tree
    c = write(tmp / "exp/lists.yaml", "_base_: ../_base_/sched.yaml\n" + DATASET_YAML +
              "augment: {crop_size: [256, 256]}\n")
    assert load_config(c).augment.crop_size == [256, 256]


def test_replace_key_replaces_the_whole_subtree(tree):
    tmp, _ = tree
    merged = write(tmp / "exp/merged.yaml", """
        _base_: [../_base_/ds.yaml, ../_base_/sched.yaml]
        train: {epochs: 5}
        """)
    replaced = write(tmp / "exp/replaced.yaml", """
        _base_: [../_base_/ds.yaml, ../_base_/sched.yaml]
        train: {_replace_: true, epochs: 5}
        """)
    m, r = load_config(merged), load_config(replaced)
    assert m.train.batch_size == 8 and m.train.lr == pytest.approx(6e-5)
    assert r.train.epochs == 5
    # everything the base set under train is gone: schema defaults instead
    assert r.train.batch_size == Config.__dataclass_fields__["train"].default_factory().batch_size
    assert r.train.ema.decay == pytest.approx(0.999) and r.train.lr == pytest.approx(6e-5)  # defaults equal here
    r2 = load_config(write(tmp / "exp/replaced2.yaml", """
        _base_: [../_base_/ds.yaml, ../_base_/sched.yaml]
        eval: {_replace_: true, mode: slide}
        """))
    assert r2.eval.mode == "slide" and r2.eval.tta.scales == [1.0]


def test_replace_removes_dataset_keys(tmp_path):
    write(tmp_path / "base.yaml", DATASET_YAML)
    c = write(tmp_path / "c.yaml", """
        _base_: base.yaml
        dataset: {_replace_: true, name: other, type: index_mask, root: tests/data/loveda, classes: [x, y]}
        """)
    cfg = load_config(c)
    assert cfg.dataset.name == "other" and cfg.dataset.value_map == {} and cfg.dataset.ignore_values == []


def test_overrides_dotted_keys_with_yaml_values(tree):
    _, child = tree
    cfg = load_config(child, ["train.epochs=2", "train.lr=1e-4", "augment.crop_size=[128, 96]",
                              "eval.tta.hflip=true", "model.mean=null", "stage.title=hello world",
                              "dataset.value_map={5: 0}"])
    assert cfg.train.epochs == 2 and cfg.train.lr == pytest.approx(1e-4)
    assert cfg.augment.crop_size == [128, 96] and cfg.eval.tta.hflip is True
    assert cfg.model.mean is None and cfg.stage.title == "hello world"
    assert cfg.dataset.value_map == {5: 0}


def test_override_errors(tree):
    _, child = tree
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(child, ["train.epochs"])
    with pytest.raises(ConfigError, match="'train.epochs' is a value, not a section"):
        load_config(child, ["train.epochs.x=1"])
    with pytest.raises(ConfigError, match=r"--set.*unknown config key 'train.epoch'; did you mean 'train.epochs'"):
        load_config(child, ["train.epoch=3"])


# -------------------------------------------------------------------------------------------------------------
# validation errors: the file, the key path, the nearest key


def test_misspelt_key_names_file_key_path_and_nearest_key(tree):
    tmp, _ = tree
    bad = write(tmp / "exp/typo.yaml", "_base_: ../_base_/ds.yaml\ntrain:\n  epohcs: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    msg = str(info.value)
    assert str(bad.resolve()) in msg
    assert "unknown config key 'train.epohcs'" in msg and "did you mean 'train.epochs'?" in msg


def test_misspelt_key_in_a_base_names_the_base_file(tree):
    tmp, _ = tree
    base = write(tmp / "_base_/bad_base.yaml", "augment:\n  colour_jitter: [0.1, 0.1, 0.1, 0.05]\n")
    child = write(tmp / "exp/uses_bad_base.yaml", "_base_: [../_base_/ds.yaml, ../_base_/bad_base.yaml]\n")
    with pytest.raises(ConfigError) as info:
        load_config(child)
    msg = str(info.value)
    assert str(base.resolve()) in msg and str(child.resolve()) not in msg
    assert "'augment.colour_jitter'" in msg and "did you mean 'augment.color_jitter'?" in msg


def test_misspelt_section_and_nested_key(tree):
    tmp, _ = tree
    bad = write(tmp / "exp/sec.yaml", "_base_: ../_base_/ds.yaml\ntrian: {epochs: 3}\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'; did you mean 'train'\?"):
        load_config(bad)
    deep = write(tmp / "exp/deep.yaml", "_base_: ../_base_/ds.yaml\ntrain: {ema: {decy: 0.9}}\n")
    with pytest.raises(ConfigError, match=r"'train.ema.decy'; did you mean 'train.ema.decay'\?"):
        load_config(deep)
    far = write(tmp / "exp/far.yaml", "_base_: ../_base_/ds.yaml\ntrain: {ema: {zzzzzz: 1}}\n")
    with pytest.raises(ConfigError, match=r"valid keys here: decay, enabled"):
        load_config(far)


@pytest.mark.parametrize("yaml_text, pattern", [
    ("train: {epochs: three}", r"'train.epochs' must be an integer, got 'three'"),
    ("train: {lr: fast}", r"'train.lr' must be a number"),
    ("train: {amp: 'yes'}", r"'train.amp' must be true or false"),
    ("augment: {crop_size: 512}", r"'augment.crop_size' must be a list"),
    ("model: {arch: segformr}", r"'model.arch' must be one of .*; did you mean 'segformer'\?"),
    ("eval: {mode: sliding}", r"'eval.mode' must be one of \['whole', 'slide'\]"),
    ("train: {ema: 0.999}", r"'train.ema' must be a section"),
    ("distill: {temperature: 20}", r"distill.temperature 20.0 is outside 1..10"),
    ("dataset: {split: {ratios: {train: 0.7, val: 0.2}}}", r"split.ratios must add up to 1.0"),
    ("dataset: {palette: ['#000000']}", r"dataset.palette has 1 colours for 3 classes"),
    ("dataset: {ignore_index: 1}", r"ignore_index 1 collides with class id 1 \(b\)"),
    ("loss: {schedule: [{terms: {ce: 1.0, dicee: 0.3}}]}", r"unknown loss term\(s\) \['dicee'\]"),
])
def test_typed_validation_errors_name_file_and_key(tmp_path, yaml_text, pattern):
    write(tmp_path / "base.yaml", DATASET_YAML)
    bad = write(tmp_path / "bad.yaml", "_base_: base.yaml\n" + yaml_text + "\n")
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(bad)
    assert str(tmp_path) in str(info.value)


def test_structural_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    a = write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="circular _base_ inheritance"):
        load_config(a)
    m = write(tmp_path / "m.yaml", "_base_: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"_base_ entry 'missing.yaml' not found"):
        load_config(m)
    nd = write(tmp_path / "nd.yaml", "train: {epochs: 1}\n")
    with pytest.raises(ConfigError, match="no 'dataset' section"):
        load_config(nd)
    lst = write(tmp_path / "lst.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level of a config must be a mapping"):
        load_config(lst)
    miss = write(tmp_path / "miss.yaml", "dataset: {name: x, classes: [a]}\n")
    with pytest.raises(ConfigError, match="dataset.root must name the dataset folder"):
        load_config(miss)


# -------------------------------------------------------------------------------------------------------------
# hash, run name, saving


def test_hash_is_deterministic_and_independent_of_key_order_and_layout(tmp_path, tree):
    _, child = tree
    flat = write(tmp_path / "flat.yaml", yaml.safe_dump(to_dict(load_config(child)), sort_keys=True))
    data = to_dict(load_config(child))
    reordered = {k: (dict(reversed(list(v.items()))) if isinstance(v, dict) else v)
                 for k, v in reversed(list(data.items()))}
    rev = write(tmp_path / "rev.yaml", yaml.safe_dump(reordered, sort_keys=False))
    h = config_hash(load_config(child))
    assert len(h) == 12 and all(c in "0123456789abcdef" for c in h)
    assert config_hash(load_config(child)) == h
    assert config_hash(load_config(flat)) == h          # inheritance vs one flat file
    assert config_hash(load_config(rev)) == h           # key order
    assert config_hash(load_config(child, ["train.epochs=81"])) != h
    assert config_hash(load_config(child, ["meta.note=free text"])) == h    # meta is provenance only


def test_run_name_format():
    cfg = load_config(DUBAI_CONFIG)
    # the demo template's schedule is tuned over time: the name must follow whatever it says
    assert run_name(cfg) == f"segformer_mit-b0_1xb{cfg.train.batch_size}-{cfg.train.epochs}e_dubai-256x256"
    big = load_config(CONFIGS_DIR / "stage1_baselines/segformer_mit-b2_loveda.yaml",
                      ["runtime.gpus=8", "train.batch_size=16", "augment.crop_size=[768, 768]"])
    assert run_name(big) == "segformer_mit-b2_8xb16-50e_loveda-768x768"
    assert run_name(load_config(LOVEDA_CONFIG)) == "segformer_mit-b0_1xb4-4e_loveda-samples-256x256"
    assert run_name(load_config(DUBAI_CONFIG, ["stage.kind=tta_ab"])).startswith("tta-ab_segformer_mit-b0_")
    assert run_name(load_config(DUBAI_CONFIG, ["stage.name=My Run 1"])) == "my-run-1"


def test_save_resolved_writes_config_with_commit(tmp_path):
    cfg = load_config(DUBAI_CONFIG, ["train.epochs=3"])
    out = save_resolved(cfg, tmp_path / "run")
    saved = yaml.safe_load(out.read_text())
    meta = saved["meta"]
    assert meta["config_hash"] == config_hash(cfg) and meta["run_name"] == run_name(cfg)
    commit = config_core.git_commit()
    assert meta["code_commit"] == commit
    assert commit == "unversioned" or len(commit.split("+")[0]) == 40
    assert saved["train"]["epochs"] == 3
    # the saved file is itself a valid config that resolves to the same hash
    assert config_hash(load_config(out)) == config_hash(cfg)


def test_save_resolved_outside_git_says_unversioned(tmp_path, monkeypatch):
    import mapsage.config as mc
    assert config_core.git_commit(tmp_path) == "unversioned"
    monkeypatch.setattr(mc, "git_commit", lambda: config_core.git_commit(tmp_path))
    out = save_resolved(load_config(DUBAI_CONFIG), tmp_path / "run")
    assert yaml.safe_load(out.read_text())["meta"]["code_commit"] == "unversioned"


def test_every_template_loads():
    templates = [p for p in CONFIGS_DIR.rglob("*.yaml") if "_base_" not in p.parts]
    assert len(templates) >= 3
    for p in templates:
        cfg = load_config(p)
        assert run_name(cfg) and cfg.dataset.classes, p


def test_cli_config_show_and_typo(tmp_path, capsys):
    from runners.cli import main
    assert main(["config", "show", str(DUBAI_CONFIG), "--set", "train.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "# run name:    segformer_mit-b0_1xb8-2e_dubai-256x256" in out
    bad = write(tmp_path / "typo.yaml", f"_base_: {DUBAI_CONFIG}\naugment:\n  crop_szie: [256, 256]\n")
    assert main(["config", "show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad) in err and "did you mean 'augment.crop_size'?" in err


def test_cli_output_into_a_closed_pipe_is_quiet(tmp_path):
    # `mapsage config show ... | head -1`: the reader leaves early; no BrokenPipeError traceback, exit 0
    import subprocess
    import sys

    from mapsage.config import CONFIGS_DIR as _C
    root = _C.parent
    code = (f"import sys; sys.argv = ['mapsage', 'config', 'show', {str(DUBAI_CONFIG)!r}]; "
            "from runners.cli import main; sys.exit(main())")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                       # the reader is gone before the first write
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "BrokenPipeError" not in err and "Traceback" not in err, err
