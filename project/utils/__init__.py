from .metric_tracker import MetricTracker
from .util import (
    PROJECT_DIR,
    REPO_ROOT,
    TemplateError,
    accepted_kwargs,
    project_path,
    repo_path,
    resolve_device,
    rng_state,
    seed_everything,
    seed_worker,
    set_rng_state,
)

__all__ = ["MetricTracker", "PROJECT_DIR", "REPO_ROOT", "TemplateError", "accepted_kwargs", "project_path",
           "repo_path", "resolve_device", "rng_state", "seed_everything", "seed_worker", "set_rng_state"]
