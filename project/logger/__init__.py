from .curves import MetricsLog, plot_curves
from .logger import setup_logging
from .visualization import TensorboardWriter

__all__ = ["MetricsLog", "TensorboardWriter", "plot_curves", "setup_logging"]
