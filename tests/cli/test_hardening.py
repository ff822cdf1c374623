"""Hostile inputs to checkpoints, outputs and runs: each case is one clear line, never a silent wrong answer,
never a traceback, never a destroyed output."""

import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from synerdetect import SynerDetect
from synerdetect.cli import main
from synerdetect.config import ConfigError
from synerdetect.engine.checkpoint import find_resumable
from synerdetect.engine.train import train
from synerdetect.model.detector import WEIGHTS_NAME, CheckpointError
from synerdetect.presets import load_experiment
from synerdetect.utils import OutputError, atomic_write_text, check_output_dir, check_output_file


def _copy_ckpt(ckpt, dest):
    import shutil

    shutil.copytree(ckpt, dest)
    return dest


# ----------------------------------------------------------------------------- weights
@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
@pytest.mark.parametrize("bad", ["row", "scalar", "int"])
def test_wrong_shape_or_dtype_weights_are_refused_naming_the_tensor(ckpt, tmp_path, bad):
    folder = _copy_ckpt(ckpt, tmp_path / "c")
    state = load_file(str(folder / WEIGHTS_NAME))
    name = next(k for k, v in state.items() if v.ndim == 2 and v.shape[0] > 1)
    # copy_() would broadcast a (1, n) row or a scalar into the (m, n) parameter: a silently wrong model
    state[name] = {"row": state[name][:1].clone(), "scalar": torch.tensor(0.5), "int": state[name].to(torch.int32)}[bad]
    save_file(state, str(folder / WEIGHTS_NAME))
    with pytest.raises(CheckpointError) as e:
        SynerDetect.from_pretrained(folder)
    assert name in str(e.value) and str(folder / WEIGHTS_NAME) in str(e.value)


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_broken_weights_file_is_one_line_in_predict(ckpt, tmp_path, capsys, damage):
    folder = _copy_ckpt(ckpt, tmp_path / "c")
    w = folder / WEIGHTS_NAME
    data = w.read_bytes()
    w.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "garbage": os.urandom(500)}[damage])
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (64, 64)).save(img)
    assert main(["predict", str(img), "--checkpoint", str(folder), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(w) in err
    assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1


def test_missing_base_folder_is_said_at_once(ckpt, tmp_path):
    import shutil
    import time

    folder = _copy_ckpt(ckpt, tmp_path / "c")
    shutil.rmtree(folder / "base" / "sd")
    t0 = time.time()
    with pytest.raises(CheckpointError, match=r"base model folder base/sd/ is missing"):
        SynerDetect.from_pretrained(folder)
    assert time.time() - t0 < 5  # no model-hub retries


def test_newer_checkpoint_format_is_refused_with_the_version(ckpt, tmp_path):
    folder = _copy_ckpt(ckpt, tmp_path / "c")
    cfg = folder / "synerdetect_config.json"
    doc = json.loads(cfg.read_text())
    doc["format"] = "synerdetect/7"
    cfg.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="synerdetect/7 is newer"):
        SynerDetect.from_pretrained(folder)


# ----------------------------------------------------------------------------- outputs
def test_output_checks_name_the_problem(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    with pytest.raises(OutputError, match="is a file"):
        check_output_file(tmp_path / "afile" / "out.json")
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path / "adir")
    with pytest.raises(OutputError, match="not a regular file"):
        check_output_file("/dev/full")
    with pytest.raises(OutputError, match="is a file"):
        check_output_dir(tmp_path / "afile" / "sub")
    check_output_file(tmp_path / "new" / "deeper" / "out.json")  # creatable: fine


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="not writable"):
            check_output_dir(ro)
    finally:
        ro.chmod(0o700)


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    import synerdetect.utils as utils

    target = tmp_path / "results.json"
    atomic_write_text(target, "old\n")

    def disk_full(f, data):
        f.write(data[:3])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(utils, "_write_bytes", disk_full)
    with pytest.raises(OSError, match="No space"):
        atomic_write_text(target, "new content\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left


def test_result_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        p = atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_predict_checks_output_paths_before_scoring(ckpt, tmp_path, capsys, monkeypatch):
    from PIL import Image

    img = tmp_path / "x.png"
    Image.new("RGB", (64, 64)).save(img)
    loaded = []
    monkeypatch.setattr(SynerDetect, "from_pretrained", classmethod(lambda _cls, *_a, **_k: loaded.append(1)))
    rc = main(
        [
            "predict",
            str(img),
            "--checkpoint",
            str(ckpt),
            "--json",
            str(tmp_path / "missing" / "x" / "o.json"),
            "--csv",
            "/dev/full",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "/dev/full" in err and not loaded  # refused before the model was even loaded


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_evaluate_validates_perturb_before_the_clean_pass(ckpt, bench, tmp_path, capsys, monkeypatch):
    scored = []
    import synerdetect.engine.evaluate as ev

    real = ev.score_samples
    monkeypatch.setattr(ev, "score_samples", lambda *a, **k: scored.append(1) or real(*a, **k))
    rc = main(
        [
            "evaluate",
            "--checkpoint",
            str(ckpt),
            "--data",
            str(bench / "test"),
            "--out",
            str(tmp_path / "e"),
            "--perturb",
            "jpeg:abc",
            "--no-progress",
            "--workers",
            "0",
        ]
    )
    assert rc == 2 and not scored
    assert "jpeg" in capsys.readouterr().err


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_device_cuda_without_cuda_is_one_line(ckpt, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "x.png")
    assert main(["predict", str(tmp_path), "--checkpoint", str(ckpt), "--device", "cuda", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no usable CUDA device" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- runs
def _cfg(bench, out, *extra):
    return load_experiment(
        None,
        [
            f"data.train={bench / 'train'}",
            "data.train_layout=cnndetection",
            "data.image_size=64",
            "model.inversion_steps=2",
            "train.batch_size=4",
            "train.max_steps=4",
            "train.checkpoint_every=2",
            "train.log_every=1",
            f"train.output_dir={out}",
            "train.num_workers=0",
            *extra,
        ],
        preset="tiny",
    )


def test_max_steps_zero_is_refused():
    with pytest.raises(ConfigError, match="max_steps=0"):
        load_experiment(None, ["train.max_steps=0"], preset="tiny")


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_finished_run_is_left_alone_then_extended_from_final(bench, tmp_path, capsys):
    out = tmp_path / "run"
    first = train(_cfg(bench, out), resume="auto", progress=False)
    assert first["global_step"] == 4
    before = (out / "final" / WEIGHTS_NAME).read_bytes()
    # the same request again: nothing is retrained, and it says so
    again = train(_cfg(bench, out), resume="auto", progress=False)
    assert again["global_step"] == 4 and "finished run" in capsys.readouterr().out
    assert (out / "final" / WEIGHTS_NAME).read_bytes() == before
    # more steps: continues from final/ (step 4), not from the last periodic checkpoint (step 2)
    more = train(_cfg(bench, out, "train.max_steps=6"), resume="auto", progress=False)
    said = capsys.readouterr().out
    assert more["global_step"] == 6 and "extending the finished run" in said and "from step 4" in said
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) == [1, 2, 3, 4, 5, 6]  # no duplicated steps


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_config_mismatch_is_refused_and_config_yaml_kept(bench, tmp_path):
    out = tmp_path / "run"
    train(_cfg(bench, out, "train.max_steps=2"), resume="auto", progress=False)
    before = (out / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"loss.alpha: 0.5 -> 0.9"):
        train(_cfg(bench, out, "train.max_steps=2", "loss.alpha=0.9"), resume="auto", progress=False)
    assert (out / "config.yaml").read_text() == before


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_resume_falls_back_to_the_previous_good_checkpoint(bench, tmp_path, capsys):
    out = tmp_path / "run"

    class Killed(Exception):
        pass

    def kill(step, _losses):
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        train(_cfg(bench, out, "train.max_steps=6"), resume="auto", progress=False, on_step=kill)
    latest = out / "checkpoints" / "step-00000004"
    (latest / WEIGHTS_NAME).write_bytes(b"\0" * 10)  # the newest checkpoint is corrupt
    start, skipped = find_resumable(out)
    assert start == out / "checkpoints" / "step-00000002" and skipped[0][0] == latest
    summary = train(_cfg(bench, out, "train.max_steps=6"), resume="auto", progress=False)
    said = capsys.readouterr().out
    assert summary["global_step"] == 6
    assert "step-00000004 is unreadable" in said and "falling back" in said and "resuming from" in said


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_steps_without_update_are_reported(bench, tmp_path):
    import shutil

    data = tmp_path / "train"
    shutil.copytree(bench / "train", data)
    for f in (data / "gan_upsample" / "1_fake").glob("*.png"):
        f.write_bytes(b"corrupt")  # every fake unreadable: no batch holds both classes
    out = tmp_path / "run"
    cfg = load_experiment(
        None,
        [
            f"data.train={data}",
            "data.train_layout=cnndetection",
            "data.image_size=64",
            "model.inversion_steps=2",
            "train.batch_size=4",
            "train.max_steps=2",
            f"train.output_dir={out}",
            "train.num_workers=0",
        ],
        preset="tiny",
    )
    summary = train(cfg, resume="never", progress=False)
    assert summary["no_update_steps"] == 2 and summary["skipped_files"] > 0
    assert json.loads((out / "train_summary.json").read_text())["no_update_steps"] == 2


def test_cache_build_needs_a_detector(bench, tmp_path, capsys):
    rc = main(["cache", "build", "--data", str(bench / "test"), "--cache-dir", str(tmp_path / "c")])
    assert rc == 2 and "--checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_overrides_may_follow_options():
    from synerdetect.cli import parse_args

    args = parse_args(["train", "--preset", "tiny", "train.epochs=2", "--no-progress", "loss.alpha=0.3"])
    assert args.overrides == ["train.epochs=2", "loss.alpha=0.3"] and args.no_progress
    with pytest.raises(SystemExit):
        parse_args(["train", "--bogus"])


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_predict_inputs_scan_a_deep_tree_and_cache_hash_refuses_a_fifo(tmp_path):
    import sys

    from PIL import Image

    from synerdetect.cache import content_hash
    from synerdetect.engine.scoring import expand_inputs

    deep = leaf = tmp_path / "d"
    deep.mkdir()
    for _ in range(1200):  # one level at a time (pathlib/os.makedirs recurse per level)
        leaf = leaf / "a"
        os.mkdir(leaf)
    Image.new("RGB", (8, 8)).save(leaf / "x.png")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(400)  # a recursive scan would fail far before 1200 levels
    try:
        paths, missing = expand_inputs([str(deep)])
    finally:
        sys.setrecursionlimit(limit)
        (leaf / "x.png").unlink()
        while leaf != deep:  # bottom-up, without recursion: pytest's own clean-up would recurse 1200 deep
            os.rmdir(leaf)
            leaf = leaf.parent
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["x.png"] and not missing
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="FIFO"):
        content_hash(fifo)  # would block forever on open() before


def test_fifo_among_predict_inputs_is_named_not_missing(tmp_path, capsys):
    """A FIFO given to predict / inspect is "not a regular file (FIFO)", as docs/usage.md says, not "no such
    file"; a glob that matches one reports it too, and nothing ever opens it."""
    import threading

    from PIL import Image

    from synerdetect.engine.inputs import expand_inputs

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    done = threading.Event()
    results: list = []

    def run():
        try:
            results.append(expand_inputs([str(fifo)]))
            results.append(expand_inputs([str(tmp_path / "*.png")]))
            results.append(main(["inspect", str(fifo)]))
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            results.append(e)
        finally:
            done.set()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    if not done.wait(30):  # unblock a reader stuck on the FIFO, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("a FIFO input was opened")
    worker.join()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    assert results[0] == ([], [(str(fifo), "not a regular file (FIFO)")])
    assert results[1] == ([str(tmp_path / "a.png")], [(str(fifo), "not a regular file (FIFO)")])
    assert results[2] == 2  # nothing to inspect
    err = capsys.readouterr().err
    assert f"{fifo}: not a regular file (FIFO)" in err and "no such file" not in err
