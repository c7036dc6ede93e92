from .base_data_loader import BaseDataLoader
from .base_model import BaseModel
from .base_trainer import BaseTrainer
from .data_order import BatchStream, ResumableSampler, ShardSampler
from .split import split_indices

__all__ = ["BaseDataLoader", "BaseModel", "BaseTrainer", "BatchStream", "ResumableSampler", "ShardSampler",
           "split_indices"]
