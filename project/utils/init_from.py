"""Start a run from another run's weights (`--init-from CKPT`): weights only, no optimizer,
epoch or RNG state; missing and unexpected keys are printed, shape mismatches refused by name
unless the layer is listed in `--init-skip` (a new head: `--init-skip fc`)."""
from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch

from .config import ConfigError


def read_weights(path: Path, trust: bool, logger: logging.Logger) -> dict:
    """The state_dict in one of our checkpoints, a plain state_dict file, or (only with `trust`:
    unpickling runs code) a checkpoint of the classic template, which pickles its ConfigParser."""
    if not path.is_file():
        raise ConfigError("", f"no checkpoint file at {path}", source="--init-from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not trust:
            raise ConfigError("", f"{path} holds pickled objects (a classic pytorch-template checkpoint pickles its "
                              "ConfigParser): loading it runs code from the file; if you trust it, add "
                              "--trust-checkpoint", source="--init-from") from None
        logger.warning(f"--trust-checkpoint: unpickling {path} with weights_only=False (this runs code from the file)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # a missing class the pickle names, a damaged file
            raise ConfigError("", f"{path} cannot be unpickled here: {err}", source="--init-from") from None
    except Exception as err:
        raise ConfigError("", f"{path} is not a loadable checkpoint ({type(err).__name__})",
                          source="--init-from") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError("", f"{path} holds no state_dict of tensors", source="--init-from")
    return {key.removeprefix("module.").removeprefix("_orig_mod."): value for key, value in state.items()}


def init_from(model: torch.nn.Module, path: str | Path, skip: list[str], trust: bool,
              logger: logging.Logger) -> None:
    """Load what fits of the weights at `path` into `model` (strict=False semantics)."""
    weights = read_weights(Path(path), trust, logger)
    own = model.state_dict()
    skipped = [k for k in weights if any(k == s or k.startswith(s + ".") for s in skip)]
    unknown = [s for s in skip if not any(k == s or k.startswith(s + ".") for k in list(weights) + list(own))]
    if unknown:
        raise ConfigError("", f"no layer named {', '.join(unknown)} (layers: {_layers(own)})", source="--init-skip")
    wrong = [f"{k} {tuple(weights[k].shape)} -> {tuple(own[k].shape)}" for k in weights
             if k in own and k not in skipped and weights[k].shape != own[k].shape]
    if wrong:
        raise ConfigError("", f"shapes differ: {'; '.join(wrong)}: list the layer in --init-skip to start it fresh",
                          source="--init-from")
    kept = {k: v for k, v in weights.items() if k not in skipped}
    result = model.load_state_dict(kept, strict=False)
    logger.info(f"initialised from {path}: {len(kept) - len(result.unexpected_keys)} tensors loaded"
                + (f", skipped {', '.join(skipped)}" if skipped else ""))
    if result.missing_keys:
        logger.info(f"missing keys (left as initialised): {', '.join(result.missing_keys)}")
    if result.unexpected_keys:
        logger.info(f"unexpected keys (ignored): {', '.join(result.unexpected_keys)}")


def _layers(state: dict) -> str:
    names = sorted({k.rsplit(".", 1)[0] for k in state})
    return ", ".join(names[:12])
