"""Config files, overrides and their mistakes: one line naming the key and where it was
written, exit 2; numbers and words read as people write them."""
from __future__ import annotations

import json
import re
import shutil
import uuid

import pytest
import yaml
from _template_run import CONFIG, PROJECT, REPO, load_checkpoint, run_process, train_argv, train_cmd
from _template_run import template_train as train_py
from utils.config import parse_override, read_config
from utils.schema import validate


def write_config(folder, name, mutate=None, text=None):
    path = folder / name
    if text is not None:
        path.write_text(text)
        return path
    config = json.loads(CONFIG.read_text())
    if mutate:
        mutate(config)
    path.write_text(yaml.safe_dump(config) if name.endswith((".yaml", ".yml")) else json.dumps(config, indent=2))
    return path


def drop_optimizer(config):
    del config["optimizer"]


def bad_epochs(config):
    config["trainer"]["epochs"] = "ten"


def unknown_arch(config):
    config["arch"]["type"] = "ResNet9000"


def typo_top_level(config):
    config["lr_schedular"] = config.pop("lr_scheduler")


def unknown_metric(config):
    config["metrics"] = ["accuracy", "acuracy"]


MALFORMED_JSON = '{\n  "name": "Digits_MLP",\n  "arch": {"type": "DigitsModel" "args": {}}\n}\n'
MALFORMED_YAML = "name: Digits_MLP\narch:\n  type: DigitsModel\n   args: {}\n  - nope\n"

CASES = [
    # case, config file name, mutate, file text, extra args, expected message (regex; {file} = the path)
    ("unknown type", "c.json", unknown_arch, None, [],
     r"in {file}: arch\.type: unknown type 'ResNet9000' in model\.model"),
    ("missing key", "c.json", drop_optimizer, None, [], r"in {file}: optimizer: missing key$"),
    ("wrong type in file", "c.yaml", bad_epochs, None, [],
     r"in {file}: trainer\.epochs: expected an integer >= 1, got 'ten' \(str\)$"),
    ("wrong type by --set", "c.json", None, None, ["--set", "trainer.save_period=often"],
     r"in --set trainer\.save_period=often: trainer\.save_period: expected an integer >= 1, got 'often'"),
    ("a fraction where an integer goes, echoed as typed", "c.json", None, None, ["--set", "trainer.epochs=1e-3"],
     r"in --set trainer\.epochs=1e-3: trainer\.epochs: expected an integer >= 1, got 0\.001 \(float\)$"),
    ("typo in a trainer key", "c.json", None, None, ["--set", "trainer.epoch=3"],
     r"in --set trainer\.epoch=3: trainer\.epoch: unknown key \(did you mean 'epochs'\?\)$"),
    ("typo in a top-level key", "c.json", typo_top_level, None, [],
     r"in {file}: lr_schedular: unknown key \(did you mean 'lr_scheduler'\?\)$"),
    ("a new top-level object", "c.json", None, None, ["--set", "augment.flip=true"],
     r"in --set augment\.flip=true: augment: unknown key \(known: name, .*extra\)$"),
    ("unknown metric in the file", "c.json", unknown_metric, None, [],
     r"in {file}: metrics\[1\]: unknown metric 'acuracy' in model\.metric \(did you mean 'accuracy'\?\)$"),
    ("unknown metric by --set", "c.json", None, None, ["--set", "metrics=[accuracy, f1]"],
     r"in --set metrics=\[accuracy, f1\]: metrics\[1\]: unknown metric 'f1' in model\.metric"),
    ("unknown loss", "c.json", None, None, ["--set", "loss=nll_los"],
     r"in --set loss=nll_los: loss: unknown loss 'nll_los' in model\.loss \(did you mean 'nll_loss'\?\)$"),
    ("bad optimizer argument", "c.json", None, None, ["--set", "optimizer.args.lrr=0.1"],
     r"in --set optimizer\.args\.lrr=0\.1: optimizer\.args: Adam: got an unexpected keyword argument 'lrr'"),
    ("plateau scheduler per step", "c.json", None, None,
     ["--set", "lr_scheduler={type: ReduceLROnPlateau, args: {}, interval: step}"],
     r"lr_scheduler\.interval: ReduceLROnPlateau steps on an epoch's metric: use \"epoch\"$"),
    ("plateau mode against the monitor", "c.json", None, None,
     ["--set", "lr_scheduler={type: ReduceLROnPlateau, args: {mode: min}}"],
     r"lr_scheduler\.args\.mode: is 'min' but trainer\.monitor is 'max' \(the mode follows the monitor"),
    ("OneCycleLR without a length", "c.json", None, None,
     ["--set", "lr_scheduler={type: OneCycleLR, args: {max_lr: 0.01}}"],
     r"lr_scheduler\.args: OneCycleLR needs its length: set total_steps: auto"),
    ("malformed JSON", "c.json", None, MALFORMED_JSON, [],
     r"in {file}: malformed JSON at line 3 column 34: Expecting ',' delimiter$"),
    ("malformed YAML", "c.yaml", None, MALFORMED_YAML, [], r"in {file}: malformed YAML at line 4 column \d+"),
    ("--set without =", "c.json", None, None, ["--set", "trainer.epochs"],
     r"in --set trainer\.epochs: expected KEY\.PATH=VALUE$"),
    ("missing file", "absent.json", None, None, [], r"in {file}: no such file$"),
    ("bad device", "c.json", None, None, ["-d", "cuda:7"], r"in --device: 'cuda:7': this machine has no CUDA"),
    ("resume auto without config", None, None, None, ["--resume", "auto"],
     r"in command line: --resume auto needs -c CONFIG"),
]


def _argv(tmp_path, index, file_name, mutate, text, extra, save_dir):
    folder = tmp_path / f"case{index}"
    folder.mkdir()
    argv = ["--set", f"trainer.save_dir={save_dir}", *extra]
    if file_name is None:
        return argv, ""
    path = folder / file_name if file_name == "absent.json" else write_config(folder, file_name, mutate, text)
    return ["-c", str(path), *argv], str(path)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_config_mistakes_are_one_line_with_exit_2(tmp_path, save_dir, capsys, case):
    name, file_name, mutate, text, extra, expected = case
    argv, path = _argv(tmp_path, 0, file_name, mutate, text, extra, save_dir)
    code = train_py.cli(argv)
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("train.py: error: config error "), lines[0]
    assert re.search(expected.format(file=re.escape(path)), lines[0]), lines[0]
    assert not save_dir.exists()  # nothing is written before every check has passed


@pytest.mark.slow
def test_a_config_mistake_is_the_exit_status_of_the_process(tmp_path):
    path = write_config(tmp_path, "c.json", unknown_arch)
    run = run_process(train_cmd(tmp_path / "saved", config=path), tmp_path / "saved", "t", timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert f"in {path}: arch.type: unknown type 'ResNet9000'" in run.stderr


def test_numbers_and_words_as_people_write_them(tmp_path):
    typed = {"1e-3": 0.001, "3E-4": 3e-4, ".5": 0.5, "1_000": 1000, "-2": -2, "1.5e2": 150.0, "10": 10,
             "on": "on", "no": "no", "yes": "yes", "off": "off", "true": True, "False": False, "null": None,
             "[a, 1e-2]": ["a", 0.01], "{lr: 1e-4}": {"lr": 1e-4}, "0x1f": "0x1f", "1e3x": "1e3x"}
    for text, value in typed.items():
        parts, parsed, label = parse_override(f"a.b={text}")
        assert (parts, parsed, label) == (["a", "b"], value, f"--set a.b={text}"), text
        assert type(parsed) is type(value), text
    # a YAML config reads the same way; where the schema wants a boolean the words count
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.read_text().replace('"lr": 0.003', '"lr": 3e-3'))  # JSON is YAML
    config = read_config(path)
    assert config["optimizer"]["args"]["lr"] == 0.003
    config["trainer"].update(tensorboard="yes", progress="off", epochs=2e1, amp="off")
    config["name"] = "on"
    checked = validate(config)
    assert checked["trainer"]["tensorboard"] is True and checked["trainer"]["progress"] is False
    assert checked["trainer"]["epochs"] == 20 and type(checked["trainer"]["epochs"]) is int
    assert checked["trainer"]["amp"] == "off" and checked["name"] == "on"
    assert config["trainer"]["tensorboard"] == "yes"  # validate is dict in, dict out


@pytest.mark.slow
def test_the_readme_lr_example_trains_with_that_rate(train):
    run = train("--epochs", "1", "--set", "optimizer.args.lr=1e-3", "--set", "lr_scheduler=null")
    assert run.returncode == 0, run.stderr
    state = run.checkpoint(1)
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.001
    assert json.loads((run.run_dir / "config.json").read_text())["optimizer"]["args"]["lr"] == 0.001


@pytest.mark.slow
def test_yaml_config_from_inside_project_with_short_flags_and_set(tmp_path, monkeypatch):
    """A YAML config, run from inside project/: overrides are typed, a relative save_dir
    means the repository's saved/, and the run id is a timestamp to the microsecond."""
    path = write_config(tmp_path, "digits.yaml")
    relative = f"saved/.pytest-{uuid.uuid4().hex[:8]}"
    monkeypatch.chdir(PROJECT)
    try:
        from _template_run import run_in_process

        argv = train_argv(relative, "--lr", "0.01", "--bs", "32", "--epochs", "1",
                          "--set", "trainer.clip_grad_norm=2.5", "--set", "metrics=[accuracy]",
                          "--set", "trainer.monitor=min val_loss", "--set", "seed=5", config=path, run_id=None)
        code, out, err = run_in_process(train_py.cli, argv)
        assert code == 0, err
        runs = list((REPO / relative / "models" / "Digits_MLP").iterdir())
        assert len(runs) == 1 and not (PROJECT / relative).exists()
        assert re.fullmatch(r"\d{8}-\d{6}-\d{6}", runs[0].name)  # year ... microseconds
        run_dir, log_dir = runs[0], REPO / relative / "log" / "Digits_MLP" / runs[0].name
        effective = json.loads((run_dir / "config.json").read_text())
        assert effective["optimizer"]["args"]["lr"] == 0.01
        assert effective["data_loader"]["args"]["batch_size"] == 32
        assert effective["trainer"]["epochs"] == 1 and effective["trainer"]["clip_grad_norm"] == 2.5
        assert effective["trainer"]["tensorboard"] is False  # typed by YAML rules, not a string
        assert effective["metrics"] == ["accuracy"] and effective["seed"] == 5
        row = json.loads((log_dir / "metrics.jsonl").read_text().splitlines()[0])
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(row) and "top_k_acc" not in row
        assert load_checkpoint(run_dir / "checkpoint-epoch1.pth")["config"] == effective
        info = (log_dir / "info.log").read_text()
        assert "Trainable parameters" in info  # lines logged before the folder existed are kept
    finally:
        shutil.rmtree(REPO / relative, ignore_errors=True)


def test_split_is_seeded_and_leaves_global_rngs_alone():
    import random

    import numpy as np
    import torch
    from data_loader.data_loaders import DigitsDataLoader
    from utils import seed_everything

    seed_everything(3)
    before = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(3)
    a = DigitsDataLoader(seed=11)
    after = (random.random(), np.random.rand(), torch.rand(1).item())
    b, c = DigitsDataLoader(seed=11), DigitsDataLoader(seed=12)
    t = DigitsDataLoader(training=False, validation_split=0.0, seed=11)
    assert before == after, "building a loader moved a global RNG"
    assert list(a.valid_set.indices) == list(b.valid_set.indices) != list(c.valid_set.indices)
    assert len(t.dataset) == 359 and len(a.dataset) == 1222 and len(a.valid_set) == 216
    assert len(set(a.sample_ids)) == 1438 and not set(a.sample_ids) & set(t.sample_ids), "test samples leak"
    assert not set(a.dataset.indices) & set(a.valid_set.indices), "validation samples leak"
