"""Small helpers shared by the template: paths, seeding, RNG state, devices."""
from __future__ import annotations

import inspect
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) from the config's `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: derive python/numpy seeds from torch's per-worker seed.

    torch seeds each worker with base_seed + worker_id, where base_seed is drawn from the
    (seeded) global generator, so worker randomness is reproducible too.
    """
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def rng_state() -> dict:
    """Every RNG the loop touches, as tensors and numbers: loadable with weights_only=True (the
    625 ints of Python's Mersenne Twister as one tensor: as a list, torch.save took 0.4 ms)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, torch.from_numpy(np.array(internal, dtype=np.int64)), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` -> cuda when present (else mps, else cpu); `cuda` under torchrun -> cuda:LOCAL_RANK."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    try:
        device = torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r} (use cpu, cuda, cuda:N, mps or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name!r}: this machine has no CUDA device (torch {torch.__version__}); use cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"{name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"{name!r}: MPS is not available on this machine")
    return device


PROJECT_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = PROJECT_DIR.parent


def repo_path(path: str | Path) -> Path:
    """A relative `save_dir` means the repository's top level, whatever the cwd."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def project_path(path: str | Path) -> Path:
    """A relative `data_dir` means a folder inside project/ (where the bundled data lives)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_DIR / path


class TemplateError(RuntimeError):
    """A runtime failure that train.py/test.py explain in one line (exit 1), e.g. a
    missing optional package or a checkpoint that does not fit the model."""


def accepted_kwargs(target: Any, **kwargs: Any) -> dict:
    """The keyword arguments `target` takes (all of them if it has **kwargs): train.py's
    run-time extras (seed, rank...) reach a data loader written for the classic template too."""
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return kwargs
    names = {p.name for p in params}
    return {k: v for k, v in kwargs.items() if k in names}
