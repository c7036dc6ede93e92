from .logger import attach_log_file, close_logging, setup_logging
from .loggers import Loggers, MetricsLog
from .visualization import TensorboardWriter, plot_curves

__all__ = ["Loggers", "MetricsLog", "TensorboardWriter", "attach_log_file", "close_logging", "plot_curves",
           "setup_logging"]
