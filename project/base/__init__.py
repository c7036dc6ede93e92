from .base_data_loader import BaseDataLoader, split_indices
from .base_model import BaseModel
from .base_trainer import BaseTrainer
from .data_order import BatchStream, ResumableSampler, ShardSampler

__all__ = ["BaseDataLoader", "BaseModel", "BaseTrainer", "BatchStream", "ResumableSampler", "ShardSampler",
           "split_indices"]
