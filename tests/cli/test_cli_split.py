"""The command line split by command (issue 17 §4): one module per command, shared option groups, ``bench``
subcommands, an example in every help, no torch for the light commands, ``python -m synerdetect`` and
``--version``; and the library functions the commands call (evaluation from a config)."""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import synerdetect
from synerdetect.cli import build_parser, main, parse_args

CLI_DIR = Path(synerdetect.__file__).parent / "cli"


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def _all_commands() -> dict[str, argparse.ArgumentParser]:
    out, todo = {}, [("", build_parser())]
    while todo:
        prefix, p = todo.pop()
        for name, sp in _subparsers(p).items():
            out[f"{prefix}{name}"] = sp
            todo.append((f"{prefix}{name} ", sp))
    return out


def test_every_command_help_shows_one_real_example():
    cmds = _all_commands()
    assert {"predict", "serve", "evaluate", "bench components", "bench cascade", "bench serve", "data check"} <= set(
        cmds
    )
    for name, p in cmds.items():
        assert p.epilog and p.epilog.startswith("example:\n  synerdetect "), name
        example = p.epilog.split("synerdetect ", 1)[1].split()
        if name.split()[0] not in ("data", "cache", "bench") or " " in name:
            assert example[: len(name.split())] == name.split(), name
        # the example parses with this parser (it is a real command line)
        parse_args(example)


def test_no_rest_markup_reaches_the_help():
    """Docstrings use reST (``code``, :mod:`x`); the help a person reads must not show it."""
    import re

    parsers = {"synerdetect": build_parser(), **_all_commands()}
    for name, p in parsers.items():
        text = p.format_help()
        assert not re.search(r"``|:(mod|func|class|meth|attr|ref):`", text), (name, text)


def test_scoring_options_are_shared_by_predict_serve_and_evaluate():
    cmds = _all_commands()

    def opts(name):
        return {s for a in cmds[name]._actions for s in a.option_strings}

    shared = {"--checkpoint", "--device", "--image-size", "--mode"}
    for name in ("predict", "serve", "evaluate"):
        assert shared <= opts(name), name
    provenance = {"--no-provenance", "--trust-metadata", "--c2pa-trust-anchors"}
    assert provenance <= opts("predict") and provenance <= opts("serve")
    assert {"--allowed-host", "--header-timeout", "--max-connections"} <= opts("serve")
    # the same option has the same help everywhere
    helps = {name: {s: a.help for a in cmds[name]._actions for s in a.option_strings} for name in ("predict", "serve")}
    for o in shared | provenance:
        assert helps["predict"][o] == helps["serve"][o], o


def test_enumerated_options_use_choices():
    from synerdetect.data.layouts import LAYOUTS
    from synerdetect.methods import list_methods
    from synerdetect.presets import ABLATIONS, list_presets

    cmds = _all_commands()

    def choices(name, opt):
        return next(a.choices for a in cmds[name]._actions if opt in a.option_strings)

    assert list(choices("train", "--method")) == list_methods()
    assert list(choices("train", "--preset")) == list_presets()
    assert sorted(choices("train", "--ablation")) == sorted(ABLATIONS)
    assert tuple(choices("evaluate", "--layout")) == tuple(LAYOUTS)
    assert tuple(choices("data check", "--layout")) == tuple(LAYOUTS)
    assert tuple(choices("predict", "--mode")) == ("full", "perceptual", "cascade")
    with pytest.raises(SystemExit):
        parse_args(["train", "--method", "nope"])


def test_bench_subcommands(monkeypatch):
    import synerdetect.bench as bench
    import synerdetect.serve.loadtest as loadtest

    calls = []
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: calls.append(("components", a, k)))
    monkeypatch.setattr(bench, "run_cascade_bench", lambda *a, **k: calls.append(("cascade", a, k)))
    ok = {"all_answered": True, "no_5xx": True, "logits_match_offline": True}
    monkeypatch.setattr(loadtest, "run_serve_bench", lambda *a, **k: calls.append(("serve", a, k)) or [ok])

    assert main(["bench"]) == 0  # bare: components with its defaults
    assert main(["bench", "components", "--preset", "paper", "--device", "cpu", "--compile"]) == 0
    argv = ["bench", "cascade", "--checkpoint", "c", "--val", "v", "--test", "t", "--steps", "7"]
    assert main(argv) == 0
    assert main(["bench", "serve", "--checkpoint", "c", "--clients", "3", "--timeout", "9"]) == 0
    assert calls == [
        ("components", ("tiny", "cpu"), {"batch_size": None, "compile": False, "out": None}),
        ("components", ("paper", "cpu"), {"batch_size": None, "compile": True, "out": None}),
        ("cascade", ("c", "v", "t"), {"steps": 7, "device": "cpu", "batch_size": 32, "out": None}),
        (
            "serve",
            ("c",),
            {
                "clients": 3,
                "requests": 320,
                "bad_share": 0.1,
                "device": "cpu",
                "max_batch": 16,
                "timeout_s": 9.0,
                "out": None,
            },
        ),
    ]
    with pytest.raises(SystemExit):
        parse_args(["bench", "cascade", "--checkpoint", "c"])  # --val and --test are required


def test_old_bench_flags_get_a_pointer_to_the_subcommands(capsys):
    with pytest.raises(SystemExit):
        parse_args(["bench", "--serve", "--checkpoint", "c"])
    assert "bench serve" in capsys.readouterr().err


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_version_and_python_dash_m(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"synerdetect {synerdetect.__version__}"
    r = subprocess.run([sys.executable, "-m", "synerdetect", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"synerdetect {synerdetect.__version__}"


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_help_presets_inspect_and_data_check_do_not_import_torch(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    code = (
        "import sys\n"
        "from synerdetect.cli import main\n"
        "argv = sys.argv[1:]\n"
        "try:\n"
        "    rc = main(argv)\n"
        "except SystemExit as e:\n"
        "    rc = e.code\n"
        "print('TORCH', 'torch' in sys.modules, 'RC', rc)\n"
    )
    runs = [
        ["--help"],
        ["predict", "--help"],
        ["presets"],
        ["inspect", str(tmp_path)],
        ["data", "check", str(tmp_path), "--layout", "folder"],
    ]
    for argv in runs:
        r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
        assert "TORCH False RC 0" in r.stdout, (argv, r.stdout[-500:], r.stderr[-2000:])


def test_no_function_of_the_command_line_is_long():
    for path in sorted(CLI_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                assert n <= 60, f"{path.name}:{node.name} has {n} lines"


# ----------------------------------------------------------------------------- library: evaluation from a config
@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_evaluate_from_config_reads_the_test_set_of_the_yaml(tiny_model, bench, tmp_path):
    from synerdetect.engine.evaluate import evaluate_from_config

    ckpt = tiny_model.save_pretrained(tmp_path / "ckpt")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"data:\n  test: {bench / 'test'}\n  test_layout: cnndetection\n  test_split: test\n")
    res = evaluate_from_config(
        ckpt, tmp_path / "eval", config=str(cfg), device="cpu", batch_size=8, num_workers=0, progress=False
    )
    # independent count: the files on disk
    n_real = len(list((bench / "test" / "gan_upsample" / "0_real").glob("*.png")))
    n_fake = len(list((bench / "test" / "gan_upsample" / "1_fake").glob("*.png")))
    on_disk = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert on_disk["generators"]["gan_upsample"]["n_real"] == n_real
    assert on_disk["generators"]["gan_upsample"]["n_fake"] == n_fake
    assert on_disk["data"] == str(bench / "test") and on_disk["layout"] == "cnndetection"
    assert len((tmp_path / "eval" / "scores.jsonl").read_text().splitlines()) == n_real + n_fake
    assert res["feature_cache"] is None and res["data"] == str(bench / "test")


def test_evaluate_from_config_without_a_test_set_says_so(tmp_path):
    from synerdetect.engine.evaluate import evaluate_from_config

    with pytest.raises(ValueError, match="give --data PATH"):
        evaluate_from_config(tmp_path / "ckpt", tmp_path / "out")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("data:\n  train: /somewhere\n")
    with pytest.raises(ValueError, match="data.test is not set"):
        evaluate_from_config(tmp_path / "ckpt", tmp_path / "out", config=str(cfg))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_main_module_of_the_cli_package_runs():
    env = {**os.environ, "PYTHONPATH": str(CLI_DIR.parent.parent)}
    r = subprocess.run(
        [sys.executable, "-m", "synerdetect.cli", "presets"], capture_output=True, text=True, timeout=120, env=env
    )
    assert r.returncode == 0 and "tiny:" in r.stdout


def test_demo_runs_on_one_thread_unless_told():
    """The demo pins torch's thread count (its numbers move with it); a count below 1 is refused in one line."""
    from synerdetect.cli.demo import cmd_demo

    assert parse_args(["demo"]).threads == 1 and parse_args(["demo", "--threads", "2"]).threads == 2
    with pytest.raises(ValueError, match="--threads must be at least 1"):
        cmd_demo(parse_args(["demo", "--threads", "0"]))
