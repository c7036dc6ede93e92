from .curves import MetricsLog, plot_curves
from .logger import attach_log_file, close_logging, setup_logging
from .loggers import Loggers
from .visualization import TensorboardWriter

__all__ = ["Loggers", "MetricsLog", "TensorboardWriter", "attach_log_file", "close_logging", "plot_curves",
           "setup_logging"]
