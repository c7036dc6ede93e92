"""Where a run's numbers go: metrics.jsonl and steps.jsonl always, and `trainer.loggers:
[tensorboard, csv, wandb, mlflow]`.

Each logger gets every epoch row (`log_epoch`) and the step-level loss and lr at log points
(`log_step`), with the time each was made; the trainer hands rows over, and flushes, at most once
a second and before every checkpoint (base_trainer.LOG_INTERVAL). W&B and MLflow are optional extras
(`pip install remotectl[wandb]`); their keys come from the environment or Colab Secrets
(WANDB_API_KEY, MLFLOW_TRACKING_TOKEN), never from a config, a log or a checkpoint. A resumed
run continues the same W&B / MLflow run: its id is in the checkpoint (`logger_ids`).
"""
from __future__ import annotations

import contextlib
import csv
import importlib
import json
import logging
import os
from pathlib import Path

from utils.util import TemplateError

from .visualization import TensorboardWriter


def optional_logger(name: str, package: str, secret: str):
    """The logger's library, or one line on what to install; its key from Colab Secrets into this
    process's environment (where the library reads it; never printed) unless already there."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        raise TemplateError(f"trainer.loggers has {name} but it is not installed: pip install "
                            f"'remotectl[{name}]' (or pip install {package})") from None
    if not os.environ.get(secret):
        try:
            from google.colab import userdata  # only on Colab

            value = userdata.get(secret)
        except Exception:  # not on Colab, no such secret, or access not granted
            value = None
        if value:
            os.environ[secret] = value
    return module


class MetricsLog:
    """Append-only JSON lines (metrics.jsonl: one per epoch; steps.jsonl: one per log point). On
    resume, rows past the resumed epoch or step (written by a run killed before it could checkpoint
    them) are dropped so each appears once; a fresh run starts an empty file."""

    def __init__(self, path: Path, resume_at: int | None = None, key: str = "epoch") -> None:
        self.path = path
        kept = [row for row in self.rows() if row.get(key, 0) <= resume_at] if resume_at is not None else []
        tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
        os.replace(tmp, path)
        self._handle = path.open("a")

    def append(self, row: dict) -> None:
        with self._naming_errors():
            self._handle.write(json.dumps(row) + "\n")

    def flush(self) -> None:
        with self._naming_errors():
            self._handle.flush()

    @contextlib.contextmanager
    def _naming_errors(self):
        """A full disk says which file (a buffered write's error carries no name)."""
        try:
            yield
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(self.path)) from None

    def close(self) -> None:
        self._handle.close()

    def rows(self) -> list[dict]:
        rows = []
        for line in self.path.read_text().splitlines() if self.path.exists() else ():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line after a kill
                continue
        return rows


class CsvLogger:
    """metrics.csv (one row per epoch) and steps.csv (one row per log point)."""

    def __init__(self, log_dir: Path, resume_epoch: int | None, resume_step: int | None) -> None:
        """A fresh run starts without the files; a resumed one keeps the rows up to its checkpoint
        (as MetricsLog does: a killed run wrote rows past it, and a torn last line)."""
        self.log_dir, self.files = log_dir, {}
        for kind, key, resume_at in (("metrics", "epoch", resume_epoch), ("steps", "step", resume_step)):
            path = log_dir / f"{kind}.csv"
            if resume_at is None or not path.exists():
                path.unlink(missing_ok=True)
                continue
            with path.open(newline="") as handle:
                header, *table = list(csv.reader(handle)) or [[]]
            column = header.index(key) if key in header else None
            kept = [row for row in table if column is not None and len(row) == len(header)
                    and _at_most(row[column], resume_at)]
            tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
            with tmp.open("w", newline="") as handle:
                csv.writer(handle).writerows([header, *kept] if header else [])
            os.replace(tmp, path)

    def _append(self, kind: str, row: dict) -> None:
        if kind not in self.files:  # the columns are the first row's, or those of the file resumed
            path = self.log_dir / f"{kind}.csv"
            fields = next(csv.reader(path.open()), None) if path.exists() else None
            handle = path.open("a", newline="")
            writer = csv.DictWriter(handle, fieldnames=fields or list(row), extrasaction="ignore")
            if not fields:
                writer.writeheader()
            self.files[kind] = (handle, writer)
        self.files[kind][1].writerow(row)

    def log_epoch(self, row: dict, step: int, wall_time: float) -> None:
        self._append("metrics", row)

    def log_step(self, row: dict, step: int, wall_time: float) -> None:
        self._append("steps", row)

    def flush(self) -> None:
        for handle, _ in self.files.values():
            handle.flush()

    def close(self) -> None:
        for handle, _ in self.files.values():
            handle.close()


class WandbLogger:
    def __init__(self, config: dict, run_id: str, log_dir: Path, wandb_id: str | None, args: dict) -> None:
        wandb = optional_logger("wandb", "wandb", "WANDB_API_KEY")
        self.run = wandb.init(project=args.get("project", config["name"]), entity=args.get("entity"),
                              name=run_id, id=wandb_id, resume="allow",
                              dir=str(log_dir), config=config, tags=args.get("tags"), reinit="finish_previous")
        self.id = self.run.id

    def log_epoch(self, row: dict, step: int, wall_time: float) -> None:  # W&B stamps rows itself
        self.run.log({("val/" + k[4:] if k.startswith("val_") else f"train/{k}"): v for k, v in row.items()},
                     step=step)

    def log_step(self, row: dict, step: int, wall_time: float) -> None:
        self.run.log({f"train_step/{k}": v for k, v in row.items() if k != "step"}, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowLogger:
    def __init__(self, config: dict, run_id: str, log_dir: Path, mlflow_id: str | None, args: dict) -> None:
        self.mlflow = mlflow = optional_logger("mlflow", "mlflow-skinny", "MLFLOW_TRACKING_TOKEN")
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow.set_tracking_uri((log_dir / "mlruns").resolve().as_uri())
        mlflow.set_experiment(args.get("experiment", config["name"]))
        self.run = mlflow.start_run(run_id=mlflow_id, run_name=None if mlflow_id else run_id)
        self.id = self.run.info.run_id
        if not mlflow_id:
            mlflow.log_params({k: str(v)[:500] for k, v in _flat(config).items()})

    def log_epoch(self, row: dict, step: int, wall_time: float) -> None:  # MLflow stamps rows itself
        self.mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

    def log_step(self, row: dict, step: int, wall_time: float) -> None:
        self.mlflow.log_metrics({f"step_{k}": float(v) for k, v in row.items() if k != "step"}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


class Loggers:
    """The configured loggers as one: rows go to each of them, in order."""

    def __init__(self, names: list, config: dict, run_id: str, log_dir: Path, ids: dict, resume_epoch: int | None,
                 resume_step: int | None, logger: logging.Logger) -> None:
        self.items: dict = {}
        for entry in names:
            name, args = (entry, {}) if isinstance(entry, str) else (entry["type"], entry.get("args") or {})
            if name == "tensorboard":
                try:
                    self.items[name] = TensorboardWriter(log_dir, resume_epoch, resume_step)
                except ImportError:
                    logger.warning("tensorboard is enabled in the config but not installed: "
                                   "pip install tensorboard (or drop it from trainer.loggers)")
            elif name == "csv":
                self.items[name] = CsvLogger(log_dir, resume_epoch, resume_step)
            elif name == "wandb":
                self.items[name] = WandbLogger(config, run_id, log_dir, ids.get(name), args)
            elif name == "mlflow":
                self.items[name] = MlflowLogger(config, run_id, log_dir, ids.get(name), args)

    def ids(self) -> dict:
        return {name: item.id for name, item in self.items.items() if getattr(item, "id", None)}

    def log_epoch(self, row: dict, step: int, wall_time: float) -> None:
        for item in self.items.values():
            item.log_epoch(row, step, wall_time)

    def log_step(self, row: dict, step: int, wall_time: float) -> None:
        for item in self.items.values():
            item.log_step(row, step, wall_time)

    def flush(self) -> None:
        for item in self.items.values():
            if hasattr(item, "flush"):  # W&B and MLflow send on their own
                item.flush()

    def close(self) -> None:
        for item in self.items.values():
            item.close()


def _at_most(text: str, limit: int) -> bool:
    """A CSV cell's number is at most `limit` (a torn row's cell may be no number)."""
    try:
        return float(text) <= limit
    except ValueError:
        return False


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
