"""TensorBoard scalars when tensorboard is installed: epoch rows (step = epoch) and, in the
`steps/` subfolder, the step-level loss and lr (step = optimizer step).

Images and histograms are off on purpose: the classic template logged an image grid every
few batches, which made an epoch 1.8x slower than a plain loop.
"""
from __future__ import annotations

import logging
from pathlib import Path


class TensorboardWriter:
    def __init__(self, log_dir: str | Path | None, logger: logging.Logger, enabled: bool,
                 purge_epoch: int | None = None, purge_step: int | None = None):
        self.writer = self.steps = None
        if not enabled or log_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning("tensorboard is enabled in the config but not installed: "
                           "pip install tensorboard (or drop it from trainer.loggers)")
            return
        # a resume drops what a killed run logged past its checkpoint
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_epoch + 1 if purge_epoch else None)
        self.steps = SummaryWriter(str(Path(log_dir) / "steps"), purge_step=purge_step + 1 if purge_step else None)

    def log_epoch(self, values: dict, step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if key in ("epoch", "time"):
                continue
            group = "valid" if key.startswith("val_") else "train"
            self.writer.add_scalar(f"{key[4:] if key.startswith('val_') else key}/{group}", value, values["epoch"])

    def log_step(self, values: dict, step: int) -> None:
        if self.steps is not None:
            for key in ("loss", "lr"):
                self.steps.add_scalar(f"{key}/train_step", values[key], step)

    def close(self) -> None:
        for writer in (self.writer, self.steps):
            if writer is not None:
                writer.close()
