"""Config files, overrides and their mistakes: one line naming the key and the file, exit 2."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import uuid
from pathlib import Path

import pytest
import yaml
from _template_run import CONFIG, PROJECT, REPO, load_checkpoint, run_snippet


def write_config(tmp_path, name, mutate=None, text=None):
    path = tmp_path / name
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
    ("typo in a trainer key", "c.json", None, None, ["--set", "trainer.epoch=3"],
     r"in --set trainer\.epoch=3: trainer\.epoch: unknown key \(did you mean 'epochs'\?\)$"),
    ("bad optimizer argument", "c.json", None, None, ["--set", "optimizer.args.lrr=0.1"],
     r"in --set optimizer\.args\.lrr=0\.1: optimizer\.args: Adam: got an unexpected keyword argument 'lrr'"),
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


def test_config_mistakes_are_one_line_with_exit_2(tmp_path, save_dir):
    """All cases through train.py's own entry point, in one child process (each case
    would otherwise pay torch's start-up); the two tests below check a real exit."""
    argvs, files = [], []
    for i, (_, name, mutate, text, extra, _) in enumerate(CASES):
        argv, path = _argv(tmp_path, i, name, mutate, text, extra, save_dir)
        argvs.append(argv)
        files.append(path)
    # and a runtime failure explained in one line, exit 1: MNIST needs torchvision (absent here)
    argvs.append(["-c", str(PROJECT / "config_mnist.json"), "--set", f"trainer.save_dir={save_dir}", "-d", "cpu"])
    code = f"""
import contextlib, io, json, train
out = []
for argv in {argvs!r}:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = train.cli(argv)
        except SystemExit as exc:
            code = exc.code
    out.append([code, err.getvalue()])
print(json.dumps(out))
"""
    proc = run_snippet(code)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    mnist_code, mnist_err = results.pop()
    if importlib.util.find_spec("torchvision") is None:
        assert mnist_code == 1, mnist_err
        assert mnist_err.strip() == ("train.py: error: MnistDataLoader needs torchvision: pip install torchvision "
                                     "(Colab has it; the default digits config does not need it)")
    for (case, *_, expected), path, (code, stderr) in zip(CASES, files, results):
        assert code == 2, (case, stderr)
        assert "Traceback" not in stderr, case
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, (case, stderr)
        assert lines[0].startswith("train.py: error: config error "), (case, lines[0])
        assert re.search(expected.format(file=re.escape(path)), lines[0]), (case, lines[0])
    # a run that failed before its first checkpoint leaves no empty folders behind
    assert not save_dir.exists() or not [p for p in save_dir.rglob("*") if p.is_file()]


@pytest.mark.parametrize("index", [0, 6])  # unknown type, malformed JSON: as a real process exits
def test_config_mistake_exit_status_of_the_process(train, tmp_path, index):
    case, name, mutate, text, extra, expected = CASES[index]
    argv, path = _argv(tmp_path, index, name, mutate, text, extra, tmp_path / "saved")
    run = train(*extra, config=Path(path), timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert re.search(expected.format(file=re.escape(path)), run.stderr)


@pytest.mark.slow
def test_yaml_config_from_inside_project_with_short_flags_and_set(train, tmp_path):
    """A YAML config, run from inside project/: overrides are typed, a relative save_dir
    means the repository's saved/, and the run id is a timestamp to the microsecond."""
    path = write_config(tmp_path, "digits.yaml")
    relative = f"saved/.pytest-{uuid.uuid4().hex[:8]}"
    try:
        run = train("--lr", "0.01", "--bs", "32", "--epochs", "1", "--set", "trainer.clip_grad_norm=2.5",
                    "--set", "metrics=[accuracy]", "--set", "trainer.monitor=min val_loss", "--set", "seed=5",
                    "--set", f"trainer.save_dir={relative}", config=path, run_id=None, cwd=PROJECT)
        assert run.returncode == 0, run.stderr
        runs = list((REPO / relative / "models" / "Digits_MLP").iterdir())
        assert len(runs) == 1 and not (PROJECT / relative).exists()
        assert re.fullmatch(r"\d{8}-\d{6}-\d{6}", runs[0].name)  # year ... microseconds
        run_dir, log_dir = runs[0], REPO / relative / "log" / "Digits_MLP" / runs[0].name
        effective = json.loads((run_dir / "config.json").read_text())
        assert effective["optimizer"]["args"]["lr"] == 0.01
        assert effective["data_loader"]["args"]["batch_size"] == 32
        assert effective["trainer"]["epochs"] == 1
        assert effective["trainer"]["clip_grad_norm"] == 2.5
        assert effective["trainer"]["tensorboard"] is False  # typed by YAML rules, not a string
        assert effective["metrics"] == ["accuracy"] and effective["seed"] == 5
        row = json.loads((log_dir / "metrics.jsonl").read_text().splitlines()[0])
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(row) and "top_k_acc" not in row
        assert load_checkpoint(run_dir / "checkpoint-epoch1.pth")["config"] == effective
        assert (log_dir / "info.log").exists()
    finally:
        shutil.rmtree(REPO / relative, ignore_errors=True)


def test_split_is_seeded_and_leaves_global_rngs_alone():
    code = """
import random, numpy as np, torch
from data_loader.data_loaders import DigitsDataLoader
from utils import seed_everything
seed_everything(3)
before = (random.random(), np.random.rand(), torch.rand(1).item())
seed_everything(3)
a = DigitsDataLoader(seed=11)
after = (random.random(), np.random.rand(), torch.rand(1).item())
b = DigitsDataLoader(seed=11)
c = DigitsDataLoader(seed=12)
t = DigitsDataLoader(training=False, validation_split=0.0, seed=11)
idx = lambda loader: list(loader.valid_set.indices)
assert before == after, 'building a loader moved a global RNG'
assert idx(a) == idx(b) and idx(a) != idx(c)
assert len(t.dataset) == 359 and len(a.dataset) == 1222 and len(a.valid_set) == 216
assert len(set(a.sample_ids)) == 1438 and not set(a.sample_ids) & set(t.sample_ids), 'test samples leak'
assert not set(a.dataset.indices) & set(a.valid_set.indices), 'validation samples leak'
print('ok')
"""
    proc = run_snippet(code)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
