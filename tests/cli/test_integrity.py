"""Issue 18: no command overwrites or deletes what it did not create (outputs that are inputs, demo folders, evaluate
into its own data, resume past the end), stale temporary files, CSV formula injection; and the one
``atomic_write_json`` (issue 17 §5)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synerdetect.cli import main
from synerdetect.utils import (
    OutputError,
    atomic_write_json,
    atomic_write_text,
    check_not_an_input,
    csv_cell,
    remove_stale_temp_files,
)


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (200, 10, 10)).save(path)
    return path


# ----------------------------------------------------------------------------- 5: an output path is an input
@pytest.mark.parametrize("flag", ["--json", "--csv"])
def test_predict_refuses_to_write_over_its_input_image(tmp_path, capsys, flag):
    img = _png(tmp_path / "a.png")
    before = img.read_bytes()
    # the checkpoint does not exist: the refusal must come first, before any model is looked for
    rc = main(["predict", str(img), "--checkpoint", str(tmp_path / "none"), flag, str(img)])
    err = capsys.readouterr().err
    assert rc == 2 and img.read_bytes() == before
    assert "is the input file" in err and len(err.strip().splitlines()) == 1


def test_predict_refuses_an_output_inside_an_input_folder_and_through_a_symlink(tmp_path, capsys):
    _png(tmp_path / "imgs" / "x.png")
    rc = main(["predict", str(tmp_path / "imgs"), "--checkpoint", "none", "--csv", str(tmp_path / "imgs" / "p.csv")])
    assert rc == 2 and "inside the input folder" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "imgs").iterdir()) == ["x.png"]
    link = tmp_path / "link.png"
    link.symlink_to(tmp_path / "imgs" / "x.png")
    rc = main(["predict", str(tmp_path / "imgs" / "*.png"), "--checkpoint", "none", "--json", str(link)])
    assert rc == 2 and link.is_symlink() and Image.open(link).size == (16, 16)


def test_inspect_and_data_check_refuse_their_inputs_as_output(tmp_path, capsys):
    img = _png(tmp_path / "data" / "0_real" / "a.png")
    before = img.read_bytes()
    assert main(["inspect", str(img), "--json", str(img)]) == 2
    assert img.read_bytes() == before
    assert main(["data", "check", str(tmp_path / "data"), "--json", str(tmp_path / "data" / "r.json")]) == 2
    assert not (tmp_path / "data" / "r.json").exists()
    assert capsys.readouterr().err.count("error:") == 2
    # next to the data is fine
    assert main(["inspect", str(img), "--json", str(tmp_path / "prov.json")]) == 0
    assert json.loads((tmp_path / "prov.json").read_text())["provenance"][0]["path"] == str(img)


def test_check_not_an_input_accepts_unrelated_paths(tmp_path):
    _png(tmp_path / "in" / "a.png")
    check_not_an_input(tmp_path / "out.json", [str(tmp_path / "in"), str(tmp_path / "in" / "a.png"), "nope*"])
    check_not_an_input(tmp_path / "in-other" / "x.json", [str(tmp_path / "in")])  # a name prefix is not inside
    with pytest.raises(OutputError):
        check_not_an_input(tmp_path / "in", [str(tmp_path / "in")])


# ----------------------------------------------------------------------------- 6: demo folders
def test_demo_refuses_run_and_checkpoint_folders_it_did_not_create(tmp_path):
    from synerdetect.demo.run import run_demo

    for sub in ("run", "checkpoint"):
        out = tmp_path / sub
        mine = out / sub / "my_notes.txt"
        mine.parent.mkdir(parents=True)
        mine.write_text("keep me")
        if sub == "run":
            (out / sub / "final").mkdir()  # what the old demo took as its own run
        with pytest.raises(FileExistsError, match="not created by the demo"):
            run_demo(out, quick=True, progress=False)
        assert mine.read_text() == "keep me"
        assert not (out / "data").exists()  # refused before any work


def test_method_comparison_refuses_folders_it_did_not_create(tmp_path):
    from synerdetect.demo.compare import run_comparison

    mine = tmp_path / "checkpoints" / "unifd" / "weights.bin"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="not created by the demo"):
        run_comparison(tmp_path, ["synerdetect", "unifd"], quick=True, progress=False)
    assert mine.read_bytes() == b"user data" and not (tmp_path / "data").exists()


def test_demo_folders_are_stamped_and_only_stamped_ones_are_replaced(tmp_path):
    from synerdetect.demo.run import DEMO_STAMP, clear_demo_folder, copy_demo_checkpoint, stamp_demo_folder

    src = tmp_path / "final"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "w.txt").write_text("v1")
    dst = copy_demo_checkpoint(src, tmp_path / "checkpoint")
    assert (dst / DEMO_STAMP).is_file() and (dst / "sub" / "w.txt").read_text() == "v1"
    (src / "sub" / "w.txt").write_text("v2")
    copy_demo_checkpoint(src, dst)  # the demo's own copy is replaced
    assert (dst / "sub" / "w.txt").read_text() == "v2"

    run = stamp_demo_folder(tmp_path / "run")
    (run / "metrics.jsonl").write_text("{}\n")
    clear_demo_folder(run)
    assert not run.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    clear_demo_folder(empty)  # nothing to lose
    assert not empty.exists()
    (tmp_path / "plain").write_text("a file where a folder goes")
    with pytest.raises(FileExistsError, match="not a folder"):
        clear_demo_folder(tmp_path / "plain")


# ----------------------------------------------------------------------------- 7: evaluate --out inside --data
def test_evaluate_refuses_an_out_folder_inside_its_data(tmp_path, capsys):
    from synerdetect.engine.evaluate import evaluate_from_config

    data = tmp_path / "data"
    _png(data / "gen" / "0_real" / "a.png")
    _png(data / "gen" / "1_fake" / "b.png")
    out = data / "gen" / "0_real" / "eval"
    with pytest.raises(OutputError, match="inside the input folder"):
        evaluate_from_config(tmp_path / "no-checkpoint", out, data=str(data))
    rc = main(["evaluate", "--checkpoint", "none", "--data", str(data), "--out", str(data)])
    assert rc == 2 and "inside the input folder" in capsys.readouterr().err
    assert sorted(str(p.relative_to(data)) for p in data.rglob("*")) == [
        "gen",
        "gen/0_real",
        "gen/0_real/a.png",
        "gen/1_fake",
        "gen/1_fake/b.png",
    ]


# ----------------------------------------------------------------------------- 8: resume past the end
def _fake_checkpoint(folder: Path, step: int, method: str = "synerdetect") -> Path:
    from synerdetect.model.detector import CONFIG_NAME

    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "epoch": 3}))
    (folder / CONFIG_NAME).write_text(json.dumps({"format": "synerdetect/1", "config": {"method": method}}))
    return folder


def test_resume_from_a_checkpoint_past_the_end_into_a_new_folder_is_refused(tmp_path):
    from synerdetect.engine.train import _starting_point

    ckpt = _fake_checkpoint(tmp_path / "old" / "final", step=10)
    with pytest.raises(ValueError, match="step 10, not before the 6 steps"):
        _starting_point(tmp_path / "new", str(ckpt), 6)
    # the same run's own final/: the finished run is left as it is (not an error)
    start, _ = _starting_point(tmp_path / "old", str(ckpt), 6)
    assert start == ckpt
    # and a checkpoint before the end is resumed as before
    assert _starting_point(tmp_path / "new", str(ckpt), 12)[0] == ckpt


def test_resume_checks_the_method_of_the_checkpoint(tmp_path):
    from synerdetect.config import ConfigError
    from synerdetect.engine.train import _check_resume_method

    ckpt = _fake_checkpoint(tmp_path / "c", step=2)
    _check_resume_method(ckpt, "synerdetect")
    with pytest.raises(ConfigError, match="'synerdetect' checkpoint; this run trains method 'unifd'"):
        _check_resume_method(ckpt, "unifd")


def test_train_cli_resume_past_the_end_exits_2_and_reports_no_final(bench, tmp_path, capsys):
    ckpt = _fake_checkpoint(tmp_path / "old" / "final", step=10)
    out = tmp_path / "new"
    argv = ["train", "--preset", "tiny", "--no-progress", "--resume", str(ckpt), "--method", "unifd"]
    over = [f"data.train={bench / 'train'}", "data.image_size=64", "train.batch_size=4", "train.max_steps=2"]
    rc = main(argv + over + [f"train.output_dir={out}"])
    captured = capsys.readouterr()
    assert rc == 2 and "nothing to train" in captured.err
    assert '"final"' not in captured.out and not (out / "final").exists()


# ----------------------------------------------------------------------------- 9: stale temporary files
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_write_removes_the_stale_temp_files_of_that_path_only(tmp_path):
    target = tmp_path / "out.json"
    dead, live = _dead_pid(), os.getpid()
    stale = tmp_path / f".out.json.{dead}.0123abcd.tmp"
    in_flight = tmp_path / f".out.json.{live}.89abcdef.tmp"
    other_path = tmp_path / f".other.json.{dead}.0123abcd.tmp"
    not_ours = [tmp_path / f".out.json.{dead}.tmp", tmp_path / f".out.json.{dead}.XYZ.tmp", tmp_path / "out.json.tmp"]
    for f in [stale, in_flight, other_path, *not_ours]:
        f.write_bytes(b"x" * 1000)
    atomic_write_json(target, {"a": 1})
    assert not stale.exists()
    assert in_flight.exists() and other_path.exists() and all(f.exists() for f in not_ours)
    assert json.loads(target.read_text()) == {"a": 1}
    # the folder holds nothing else: the new write left no temporary file of its own
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"out.json", in_flight.name, other_path.name, *(f.name for f in not_ours)}
    assert remove_stale_temp_files(tmp_path / "other.json") == [other_path]


def test_a_write_killed_with_sigkill_leaves_a_temp_file_the_next_write_removes(tmp_path):
    target = tmp_path / "big.json"
    code = (
        "import os, signal, synerdetect.utils as u\n"
        "def crash(f, data):\n"
        "    f.write(data[:10]); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
        "u._write_bytes = crash\n"
        f"u.atomic_write_text({str(target)!r}, 'x' * 100000)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert r.returncode == -9
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".big.json.") and left[0].endswith(".tmp")
    atomic_write_text(target, "done")
    assert [p.name for p in tmp_path.iterdir()] == ["big.json"] and target.read_text() == "done"


# ----------------------------------------------------------------------------- 12: CSV formula injection
FORMULAS = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def _spreadsheet_safe(cell: str) -> bool:
    """Independent of the code: no cell may start with a character a spreadsheet reads as a formula."""
    return not cell or cell[0] not in "=+-@\t\r"


def test_predictions_csv_escapes_formulas_and_keeps_numbers(tmp_path):
    from synerdetect.engine.outputs import PREDICTION_CSV_COLUMNS, write_predictions_csv

    rows = [
        {"path": name, "label": "fake", "verdict": "fake", "logit": -1.5, "prob_fake": 0.25, "declared_ai": None}
        for name in FORMULAS
    ] + [{"path": "plain.png", "label": "real", "logit": 2.0, "extra": "ignored"}]
    path = write_predictions_csv(tmp_path / "p.csv", rows)
    read = list(csv.DictReader(io.StringIO(path.read_bytes().decode(), newline="")))
    assert list(read[0]) == list(PREDICTION_CSV_COLUMNS)
    assert [r["path"] for r in read] == ["'" + n for n in FORMULAS] + ["plain.png"]
    assert all(_spreadsheet_safe(r["path"]) for r in read)
    assert [float(r["logit"]) for r in read] == [-1.5] * len(FORMULAS) + [2.0]  # a negative number stays a number
    assert read[0]["declared_ai"] == "" and read[-1]["verdict"] == ""


def test_results_csv_escapes_generator_names(tmp_path):
    from synerdetect.engine.metrics import ScoreRecord, summarize
    from synerdetect.engine.report import write_results

    recs = [
        ScoreRecord(f"{g}/{i}.png", g, i % 2, 0.0, 1.0, 1.0 if i % 2 else -1.0, 0.7)
        for g in FORMULAS[:4]
        for i in range(4)
    ]
    paths = write_results(tmp_path, summarize(recs), recs)
    read = list(csv.DictReader(io.StringIO(paths["csv"].read_bytes().decode(), newline="")))
    assert sorted(r["generator"] for r in read) == sorted(["'" + g for g in FORMULAS[:4]] + ["mean"])
    assert all(_spreadsheet_safe(v) for r in read for v in r.values())
    assert all(float(r["acc"]) == 1.0 for r in read)


def test_csv_cell_rule():
    assert csv_cell("=1") == "'=1" and csv_cell("a=1") == "a=1" and csv_cell(-1.0) == -1.0 and csv_cell(None) is None


# ----------------------------------------------------------------------------- issue 17 §5: one atomic_write_json
def test_one_atomic_write_json_writes_strict_json(tmp_path):
    from synerdetect.engine import report

    assert report.atomic_write_json is atomic_write_json

    class WithDict:
        def to_dict(self):
            return {"v": float("inf")}

    doc = {
        "nan": float("nan"),
        "np": np.float32(0.5),
        "arr": np.array([1.0, np.nan]),
        "i": np.int64(3),
        "path": tmp_path,
        "obj": WithDict(),
        "t": (1, 2),
    }
    text = atomic_write_json(tmp_path / "d.json", doc).read_text()

    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    got = json.loads(text, parse_constant=no_constants)
    assert got == {
        "nan": None,
        "np": 0.5,
        "arr": [1.0, None],
        "i": 3,
        "path": str(tmp_path),
        "obj": {"v": None},
        "t": [1, 2],
    }
    assert math.isclose(got["np"], 0.5)


def test_predictions_json_document(tmp_path):
    from synerdetect.engine.outputs import write_predictions_json

    rows = [{"path": "a.png", "logit": float("nan"), "prob_fake": 0.5}]
    p = write_predictions_json(tmp_path / "p.json", rows, [("b.png", "truncated")], {"method": "temperature"})
    assert json.loads(p.read_text()) == {
        "predictions": [{"path": "a.png", "logit": None, "prob_fake": 0.5}],
        "errors": [{"path": "b.png", "reason": "truncated"}],
        "calibration": {"method": "temperature"},
    }
