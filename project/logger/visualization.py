"""TensorBoard scalars and the curves PNG.

TensorBoard: epoch rows in the run's log folder (step = epoch) and the step-level loss and lr in
its `steps/` subfolder (step = optimizer step). The event files are written here, one record per
row, stamped with the row's time and flushed when the trainer flushes its logs: no writer thread (SummaryWriter's computes a pure-Python CRC
per event on a thread that takes the GIL from the training loop). The records' CRC-32C comes from
google-crc32c's C code where it is installed (Colab has it): TensorBoard's pure-Python one took
0.2 ms an epoch, 1% of a digits epoch. Images and histograms are off
on purpose: the classic template logged an image grid every few batches, 1.8x slower epochs.
"""
from __future__ import annotations

import itertools
import logging
import os
import socket
import struct
import time
from pathlib import Path

_FILE_IDS = itertools.count()


def masked_crc32c():
    """The masked CRC-32C of TFRecord framing: google-crc32c's C implementation, else TensorBoard's own."""
    try:
        import google_crc32c
    except ImportError:
        google_crc32c = None
    if google_crc32c is None or google_crc32c.implementation != "c":
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as python_crc

        return python_crc

    def fast_crc(data: bytes) -> int:
        crc = google_crc32c.value(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    return fast_crc


class TensorboardWriter:
    def __init__(self, log_dir: Path, purge_epoch: int | None = None, purge_step: int | None = None) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2  # ImportError: not installed

        self._event, self._summary, self._crc = event_pb2, summary_pb2.Summary, masked_crc32c()
        self.epochs = self._open(log_dir, purge_epoch)
        self.steps = self._open(log_dir / "steps", purge_step)

    def _open(self, folder: Path, resumed_at: int | None):
        folder.mkdir(parents=True, exist_ok=True)
        # the counter padded: TensorBoard reads a folder's files in name order (a resume in the same second)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_FILE_IDS):06d}"
        handle = (folder / name).open("ab")
        self._write(handle, self._event.Event(wall_time=time.time(), file_version="brain.Event:2"))
        if resumed_at:  # TensorBoard then hides what a killed run logged past the checkpoint
            start = self._event.SessionLog(status=self._event.SessionLog.START)
            self._write(handle, self._event.Event(wall_time=time.time(), step=resumed_at + 1, session_log=start))
        handle.flush()
        return handle

    def _write(self, handle, event) -> None:
        """One record: length, its masked CRC-32C, the event, its masked CRC-32C."""
        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        handle.write(header + struct.pack("<I", self._crc(header)) + data + struct.pack("<I", self._crc(data)))

    def _scalars(self, handle, values: dict, step: int, wall_time: float) -> None:
        summary = self._summary(value=[self._summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()])
        self._write(handle, self._event.Event(wall_time=wall_time, step=step, summary=summary))

    def log_epoch(self, row: dict, step: int, wall_time: float) -> None:
        self._scalars(self.epochs, {f"{k[4:]}/valid" if k.startswith("val_") else f"{k}/train": v
                                    for k, v in row.items() if k not in ("epoch", "time")}, row["epoch"], wall_time)

    def log_step(self, row: dict, step: int, wall_time: float) -> None:
        self._scalars(self.steps, {"loss/train_step": row["loss"], "lr/train_step": row["lr"]}, step, wall_time)

    def flush(self) -> None:
        self.epochs.flush()
        self.steps.flush()

    def close(self) -> None:
        self.epochs.close()
        self.steps.close()


def plot_curves(rows: list[dict], png_path: Path, logger: logging.Logger, steps: list[dict] | None = None) -> Path | None:
    """One panel per metric, train and validation together, the step-level loss as a thin line
    under the epoch points; skipped without matplotlib."""
    if not rows:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.debug("matplotlib is not installed: no curves plot")
        return None
    names = sorted({k.removeprefix("val_") for row in rows for k in row if k not in ("epoch", "lr", "time")})
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        if name == "loss" and steps:
            ax.plot([s["epoch"] for s in steps], [s["loss"] for s in steps], linewidth=0.8, alpha=0.5,
                    label="train (steps)")
        for key, label in ((name, "train"), (f"val_{name}", "valid")):
            points = [(row["epoch"], row[key]) for row in rows if key in row]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
