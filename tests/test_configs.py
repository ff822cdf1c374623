"""Every experiment YAML under configs/ loads, validates and encodes its paper protocol.

Fast: configs are parsed and validated only; no model is built and no data is read.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from synerdetect.config import ConfigError, ExperimentConfig, validate_experiment
from synerdetect.presets import ABLATIONS, get_preset, load_experiment, with_ablation

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ALL_YAML = sorted(CONFIGS.glob("*.yaml"))

LSUN_20 = [
    "airplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]

# name -> expected (train layout, train generators, test layout, test split)
PROTOCOLS = {
    "aigcdetect_progan": ("cnndetection", LSUN_20, "cnndetection", "test"),
    "aigcdetect_progan4": ("cnndetection", ["car", "cat", "chair", "horse"], "cnndetection", "test"),
    "robustness": ("cnndetection", LSUN_20, "cnndetection", "test"),
    "ablation_modules": ("cnndetection", LSUN_20, "cnndetection", "test"),
    "ablation_tuner": ("cnndetection", LSUN_20, "cnndetection", "test"),
    "ablation_fusion": ("cnndetection", LSUN_20, "cnndetection", "test"),
    "chameleon_progan": ("cnndetection", LSUN_20, "chameleon", "test"),
    "genimage_sdv14": ("genimage", ["stable_diffusion_v_1_4"], "genimage", "val"),
    "chameleon_sdv14": ("genimage", ["stable_diffusion_v_1_4"], "chameleon", "test"),
    "chameleon_genimage_all": ("genimage", None, "chameleon", "test"),
}
PAPER_BASED = sorted(PROTOCOLS) + ["paper"]


def _load(name: str) -> ExperimentConfig:
    return load_experiment(CONFIGS / f"{name}.yaml")


def test_expected_files_exist():
    names = {p.stem for p in ALL_YAML}
    missing = (set(PROTOCOLS) | {"tiny_demo", "paper", "unifd", "sd21_768v"}) - names
    assert not missing, f"configs/ lacks {sorted(missing)}"


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: p.name)
def test_every_yaml_loads_and_validates(path):
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw, dict) and raw.get("preset") in {"paper", "tiny"}
    cfg = load_experiment(path)  # unknown keys or bad values raise ConfigError
    validate_experiment(cfg)
    assert cfg.preset == raw["preset"]
    assert cfg.train.output_dir and not Path(cfg.train.output_dir).is_absolute()


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: p.name)
def test_yaml_only_overrides_known_fields(path):
    """Belt and braces on top of load_experiment: every key path exists in the dataclasses."""
    raw = yaml.safe_load(path.read_text())
    known = get_preset("paper")
    for section, body in raw.items():
        if section in ("preset", "method"):
            continue
        assert hasattr(known, section), f"{path.name}: unknown section {section!r}"
        assert isinstance(body, dict), f"{path.name}: section {section!r} must be a mapping"
        sub = getattr(known, section)
        for key in body:
            assert hasattr(sub, key), f"{path.name}: unknown key {section}.{key}"


@pytest.mark.parametrize("name", PAPER_BASED)
def test_paper_hyperparameters(name):
    cfg = _load(name)
    assert cfg.preset == "paper"
    assert cfg.optim.name == "sgd" and cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.optim.momentum == pytest.approx(0.9) and cfg.optim.schedule == "constant"
    assert cfg.train.batch_size == 64 and cfg.train.epochs == 6 and cfg.train.max_steps is None
    assert cfg.loss.alpha == pytest.approx(0.5) and cfg.loss.lam == pytest.approx(0.4)
    assert cfg.model.inversion_steps == 100
    assert cfg.model.clip_size == 224 and cfg.model.sd_size == 512
    # The full method: no ablation switched on in a base protocol file.
    assert cfg.loss.use_cmid and cfg.loss.use_ot_dcl and cfg.loss.use_pot
    assert cfg.model.tuner_global and cfg.model.tuner_local
    # Model paths are placeholders (or hub ids), never somebody's machine.
    assert "CLIP-ViT-L-14" in cfg.model.clip and "stable-diffusion-2-1-base" in cfg.model.sd


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_protocol_data(name):
    cfg = _load(name)
    train_layout, gens, test_layout, test_split = PROTOCOLS[name]
    d = cfg.data
    assert d.train and d.test
    assert d.train_layout == train_layout and d.train_split == "train"
    assert d.train_generators == gens
    assert d.test_layout == test_layout and d.test_split == test_split
    assert d.val is None  # the paper selects nothing on a validation set


def test_dataset_roots():
    assert _load("aigcdetect_progan").data.train.endswith("CNNDetection")
    assert _load("aigcdetect_progan").data.test.endswith("AIGCDetectBenchmark/test")
    assert _load("genimage_sdv14").data.train == _load("genimage_sdv14").data.test
    for name in ("chameleon_progan", "chameleon_sdv14", "chameleon_genimage_all"):
        assert _load(name).data.test.endswith("Chameleon")


def test_output_dirs_are_distinct():
    dirs = [load_experiment(p).train.output_dir for p in ALL_YAML]
    assert len(dirs) == len(set(dirs))


def test_robustness_and_ablations_train_like_aigcdetect():
    base = _load("aigcdetect_progan")
    for name in ("robustness", "ablation_modules", "ablation_tuner", "ablation_fusion", "chameleon_progan"):
        cfg = _load(name)
        assert cfg.data.train == base.data.train and cfg.data.train_generators == base.data.train_generators
        assert (cfg.model, cfg.loss, cfg.optim) == (base.model, base.loss, base.optim)


def test_robustness_comment_names_the_evaluate_command():
    import re

    from synerdetect.engine.perturb import parse_perturb_spec

    text = (CONFIGS / "robustness.yaml").read_text()
    assert "synerdetect evaluate" in text and "Frank et al." in text  # the protocol's source is named
    specs = re.findall(r"--perturb ([\w:.+-]+)", text)
    assert "table4" in specs and "legacy" in specs
    kinds = {p.kind for s in specs for p in parse_perturb_spec(s)}  # every spec the comment shows parses
    assert {"blur", "crop", "jpeg", "noise", "chain"} <= kinds


@pytest.mark.parametrize(
    "fname,flags",
    [
        ("ablation_modules.yaml", ["no_cmid", "no_ot_dcl", "no_pot"]),
        ("ablation_tuner.yaml", ["fixed_prompts", "tuner_no_global", "tuner_no_local"]),
    ],
)
def test_ablation_files_document_their_flags(fname, flags):
    text = (CONFIGS / fname).read_text()
    for flag in flags:
        assert flag in ABLATIONS
        assert f"--ablation {flag}" in text


def test_ablation_fusion_rows_are_registered_methods():
    import re

    from synerdetect.methods import list_methods

    assert _load("ablation_fusion").method == "synerdetect"  # the base file is the full method; rows use --method
    flags = re.findall(r"--method (\w+)", (CONFIGS / "ablation_fusion.yaml").read_text())
    assert set(flags) == set(list_methods())
    for path in ALL_YAML:  # only the UniFD file (OpenAI CLIP, its paper's weights) selects another method
        assert load_experiment(path).method == ("unifd" if path.stem == "unifd" else "synerdetect"), path.name


def test_tiny_demo():
    cfg = _load("tiny_demo")
    tiny = get_preset("tiny")
    assert cfg.preset == "tiny"
    assert cfg.model == tiny.model and cfg.loss == tiny.loss and cfg.optim == tiny.optim
    assert Path(cfg.data.train) == Path("demo_out/data/train")
    assert cfg.data.train_layout == "cnndetection" and cfg.data.train_split == "train"
    assert cfg.train.batch_size == 16


def test_tiny_demo_equals_the_demos_own_config():
    """configs/tiny_demo.yaml says it has the demo's settings: every data, model, loss, optim and train key the
    demo sets (src/synerdetect/demo/run.py demo_config) is equal, apart from the folders."""
    from synerdetect.demo.run import demo_config

    cfg, demo = _load("tiny_demo"), demo_config(Path("demo_out"))
    assert (cfg.model, cfg.loss, cfg.optim, cfg.cache) == (demo.model, demo.loss, demo.optim, demo.cache)
    assert cfg.method == demo.method and cfg.preset == demo.preset
    for field in ("train", "train_layout", "train_split", "image_size", "clip_view", "blur_prob", "jpeg_prob", "flip"):
        assert getattr(cfg.data, field) == getattr(demo.data, field), field
    assert cfg.data.image_size is None  # the two-view loaders, not the older single view
    skip = {"output_dir"}
    for field in vars(demo.train):
        if field not in skip:
            assert getattr(cfg.train, field) == getattr(demo.train, field), field


def test_source_paths_named_in_configs_exist():
    import re

    root = CONFIGS.parent
    for path in sorted(CONFIGS.iterdir()):
        for ref in re.findall(r"\b((?:src|scripts|docs|configs)/[\w/.-]+\.(?:py|md|yaml|sh|json))", path.read_text()):
            assert (root / ref).is_file(), f"{path.name} names {ref}, which does not exist"


def test_unifd_config_names_openai_clip():
    cfg = _load("unifd")
    assert cfg.method == "unifd" and cfg.model.clip == "openai/clip-vit-large-patch14"
    base = _load("ablation_fusion")
    assert (cfg.data, cfg.loss, cfg.train.epochs, cfg.train.batch_size) == (
        base.data,
        base.loss,
        base.train.epochs,
        base.train.batch_size,
    )


EXPECTED_ABLATION = {
    "full": lambda c: (
        c.loss.use_cmid and c.loss.use_ot_dcl and c.loss.use_pot and c.model.tuner_global and c.model.tuner_local
    ),
    "no_cmid": lambda c: not c.loss.use_cmid and c.loss.use_ot_dcl and c.loss.use_pot,
    "no_ot_dcl": lambda c: c.loss.use_cmid and not c.loss.use_ot_dcl,
    "no_pot": lambda c: c.loss.use_cmid and c.loss.use_ot_dcl and not c.loss.use_pot,
    "fixed_prompts": lambda c: not c.model.tuner_global and not c.model.tuner_local,
    "tuner_no_global": lambda c: not c.model.tuner_global and c.model.tuner_local,
    "tuner_no_local": lambda c: c.model.tuner_global and not c.model.tuner_local,
}


def test_every_ablation_is_checked_here():
    assert set(ABLATIONS) == set(EXPECTED_ABLATION)


@pytest.mark.parametrize("base", ["ablation_modules", "ablation_tuner", "aigcdetect_progan", "tiny_demo"])
@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_ablation_applies(base, ablation):
    cfg = _load(base)
    out = with_ablation(cfg, ablation)
    validate_experiment(out)
    assert EXPECTED_ABLATION[ablation](out)
    # An ablation touches only its switches: data, optimiser and schedule are the protocol's.
    assert out.data == cfg.data and out.optim == cfg.optim and out.train == cfg.train
    assert cfg.loss.use_cmid and cfg.model.tuner_global  # the input config is not mutated


def test_unknown_ablation_and_unknown_key_rejected(tmp_path):
    with pytest.raises(ConfigError):
        with_ablation(_load("aigcdetect_progan"), "no_such_row")
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "aigcdetect_progan.yaml").read_text() + "\nloss:\n  beta: 1.0\n")
    with pytest.raises(ConfigError):
        load_experiment(bad)
