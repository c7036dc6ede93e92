"""What Colab students reach for: fine-tuning from weights, warmup schedules, step-level
curves, and the loggers people use (TensorBoard, CSV, W&B offline, MLflow)."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import struct

import pytest
import torch
from _template_run import load_checkpoint
from test_project_classic import CLASSIC_CONFIG
from test_project_resume import assert_same_training_state

FIVE = ["--set", "arch.args.num_classes=5", "--set", "data_loader.args.classes=5"]


@pytest.fixture
def digits_checkpoint(train):
    run = train("--epochs", "2", run_id="base")
    assert run.returncode == 0, run.stderr
    return run.run_dir / "checkpoint-epoch2.pth"


def test_fine_tune_a_digits_checkpoint_into_a_5_class_head(train, digits_checkpoint):
    refused = train("--epochs", "2", *FIVE, "--init-from", str(digits_checkpoint), run_id="five")
    assert refused.returncode == 2
    assert "shapes differ: fc.weight (10, 128) -> (5, 128); fc.bias (10,) -> (5,): list the layer in --init-skip" \
        in refused.stderr
    run = train("--epochs", "2", *FIVE, "--init-from", str(digits_checkpoint), "--init-skip", "fc", run_id="five")
    assert run.returncode == 0, run.stderr
    assert f"initialised from {digits_checkpoint}: 2 tensors loaded, skipped fc.weight, fc.bias" in run.stdout
    assert "missing keys (left as initialised): fc.weight, fc.bias" in run.stdout
    assert run.summary["best"]["val_accuracy"] > 0.5  # chance is 0.2 on 5 classes
    first = run.checkpoint(1)
    assert first["epoch"] == 1 and first["global_step"] == 10  # a new run: its own epochs and steps
    base = load_checkpoint(digits_checkpoint)["state_dict"]
    assert not torch.equal(first["state_dict"]["features.1.weight"], base["features.1.weight"])  # trained on
    # the rows count from epoch 1 of the new run, the old run's optimizer never came along
    assert [row["epoch"] for row in run.metrics()] == [1, 2]
    assert train("-r", str(digits_checkpoint), "--init-from", str(digits_checkpoint), run_id=None).returncode == 2
    typo = train(*FIVE, "--init-from", str(digits_checkpoint), "--init-skip", "head", run_id="typo")
    assert typo.returncode == 2 and "no layer named head (layers: fc, features.1)" in typo.stderr


@pytest.mark.slow
def test_a_state_dict_file_and_a_classic_checkpoint_as_weights(train, digits_checkpoint, tmp_path):
    import parse_config

    weights = load_checkpoint(digits_checkpoint)["state_dict"]
    plain = tmp_path / "weights.pt"
    torch.save({f"module.{k}": v for k, v in weights.items()}, plain)  # as saved from a DDP model
    run = train("--epochs", "1", "--init-from", str(plain), run_id="plain")
    assert run.returncode == 0, run.stderr
    assert "4 tensors loaded" in run.stdout and "missing keys" not in run.stdout

    classic_config = object.__new__(parse_config.ConfigParser)
    classic_config.__dict__["config"] = CLASSIC_CONFIG
    classic = tmp_path / "model_best.pth"
    torch.save({"arch": "DigitsModel", "epoch": 9, "state_dict": weights, "optimizer": {}, "monitor_best": 0.1,
                "config": classic_config}, classic)
    refused = train("--epochs", "1", "--init-from", str(classic), run_id="classic")
    assert refused.returncode == 2 and "if you trust it, add --trust-checkpoint" in refused.stderr
    assert not (refused.save_dir / "models" / "Digits_MLP" / "classic").exists()
    resume = train("-r", str(classic), run_id=None)
    assert "--init-from CKPT --trust-checkpoint" in resume.stderr
    trusted = train("--epochs", "1", "--init-from", str(classic), "--trust-checkpoint", run_id="classic")
    assert trusted.returncode == 0, trusted.stderr
    assert "--trust-checkpoint: unpickling" in trusted.stdout and "4 tensors loaded" in trusted.stdout


WARMUP = ["--set", "lr_scheduler={type: WarmupCosineLR, args: {warmup_steps: 0.25, min_lr: 1e-5}}",
          "--set", "arch.args.dropout=0.2", "--set", "trainer.keep_last=null", "--set", "trainer.log_step=1"]


@pytest.mark.slow
def test_warmup_cosine_follows_its_closed_form_and_resumes_exactly(train):
    straight = train("--epochs", "4", *WARMUP, run_id="straight")
    # a run stopped after 2 of its 4 epochs (a runtime reset): the same 80-step schedule
    first = train("--epochs", "2", *WARMUP, "--set", "lr_scheduler.args.total_steps=80", run_id="split")
    assert straight.returncode == 0 and first.returncode == 0, straight.stderr + first.stderr
    total, warmup, base, low = 80, 20, 0.003, 1e-5  # 20 optimizer steps an epoch, 4 epochs, 25% warmup
    expected = {t: base * t / warmup if t < warmup else
                low + (base - low) * (1 + math.cos(math.pi * (t - warmup) / (total - warmup))) / 2
                for t in range(total)}
    steps = [json.loads(line) for line in (straight.log_dir / "steps.jsonl").read_text().splitlines()]
    assert [row["step"] for row in steps] == list(range(1, 81))  # log_step 1: every optimizer step
    for row in steps[:-1]:  # the lr logged after step t is the one step t+1 uses
        assert row["lr"] == pytest.approx(expected[row["step"]], rel=1e-9, abs=1e-12), row
    assert max(row["lr"] for row in steps) == pytest.approx(base)
    resumed = train("-r", str(first.run_dir / "checkpoint-epoch2.pth"), "--epochs", "4", config=None, run_id=None)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_training_state(straight.checkpoint(4), first.checkpoint(4))
    split_steps = (first.log_dir / "steps.jsonl").read_text()
    assert split_steps == (straight.log_dir / "steps.jsonl").read_text()


def test_step_level_scalars_reach_tensorboard_and_the_curves(train):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train("--epochs", "2", "--set", "trainer.loggers=[tensorboard, csv]", "--set", "trainer.log_step=5")
    assert run.returncode == 0, run.stderr
    events = EventAccumulator(str(run.log_dir / "steps"))
    events.Reload()
    loss = events.Scalars("loss/train_step")
    assert [e.step for e in loss] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert loss[-1].value < loss[0].value
    assert [e.value for e in events.Scalars("lr/train_step")] == pytest.approx([0.003] * 8)
    epochs = EventAccumulator(str(run.log_dir))
    epochs.Reload()
    assert [e.step for e in epochs.Scalars("loss/valid")] == [1, 2]
    rows = (run.log_dir / "steps.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,loss,lr" and len(rows) == 9
    assert (run.log_dir / "metrics.csv").read_text().splitlines()[0].startswith("epoch,loss,accuracy")


@pytest.mark.slow
def test_wandb_offline_writes_the_run_and_a_resume_keeps_its_id(train, monkeypatch, tmp_path):
    pytest.importorskip("wandb") if False else None  # wandb is in the dev extras: a real install
    from wandb.proto import wandb_internal_pb2

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    args = ["--set", "trainer.loggers=[wandb]", "--set", "trainer.log_step=10"]
    first = train("--epochs", "1", *args, run_id="wb")
    assert first.returncode == 0, first.stderr
    run_id = first.checkpoint(1)["logger_ids"]["wandb"]
    again = train("--epochs", "2", *args, "--resume", "auto", run_id="wb")
    assert again.returncode == 0, again.stderr
    assert again.checkpoint(2)["logger_ids"]["wandb"] == run_id
    folders = sorted((first.log_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(folders) == 2  # two sessions of the same W&B run
    keys = set()
    for folder in folders:
        for data in wandb_records(folder / f"run-{run_id}.wandb"):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "history":
                keys |= {item.key or "/".join(item.nested_key) for item in record.history.item}
    assert {"train/loss", "val/accuracy", "train_step/loss", "train_step/lr"} <= keys
    assert os.environ.get("WANDB_API_KEY") is None  # no key needed, none invented


def wandb_records(path) -> list[bytes]:
    """The records of a .wandb file: a 7-byte header, then LevelDB-log blocks of 32 KiB whose
    records (checksum, length, type: full/first/middle/last) carry protobuf Records."""
    data, pos, out, part = path.read_bytes(), 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a record header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            out.append(chunk)
        elif kind in (2, 3):
            part = (b"" if kind == 2 else part) + chunk
        elif kind == 4:
            out.append(part + chunk)
    return out


def test_mlflow_logs_when_installed_and_says_how_to_install_when_not(train):
    run = train("--epochs", "1", "--set", "trainer.loggers=[mlflow]")
    if importlib.util.find_spec("mlflow") is None:
        assert run.returncode == 1
        assert run.stderr.strip() == ("train.py: error: trainer.loggers has mlflow but it is not installed: pip "
                                      "install 'remotectl[mlflow]' (or pip install mlflow-skinny)")
        assert not run.run_dir.exists()  # a failed start leaves no folders behind
    else:
        assert run.returncode == 0, run.stderr
        assert (run.log_dir / "mlruns").is_dir() and run.checkpoint(1)["logger_ids"]["mlflow"]
