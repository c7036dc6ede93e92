from .metric_tracker import MetricTracker
from .util import TemplateError, accepted_kwargs, project_path, resolve_device, seed_everything

__all__ = ["MetricTracker", "TemplateError", "accepted_kwargs", "project_path", "resolve_device", "seed_everything"]
