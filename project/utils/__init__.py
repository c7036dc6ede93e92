from .metric_tracker import MetricTracker
from .util import (
    PROJECT_DIR,
    REPO_ROOT,
    TemplateError,
    inf_loop,
    project_path,
    read_json,
    repo_path,
    resolve_device,
    rng_state,
    seed_everything,
    seed_worker,
    set_rng_state,
    write_json,
)

__all__ = [
    "MetricTracker",
    "PROJECT_DIR",
    "REPO_ROOT",
    "TemplateError",
    "inf_loop",
    "project_path",
    "read_json",
    "repo_path",
    "resolve_device",
    "rng_state",
    "seed_everything",
    "seed_worker",
    "set_rng_state",
    "write_json",
]
