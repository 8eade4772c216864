"""Dataset readers for RFNet training and evaluation: Ianvs index files and Cityscapes
folders, decoded into one representation (RGB uint8, depth in metres, uint8 labels)
that goes through the robot's own preprocessing (the torch side of training is
rfnet.training_data). Imports nothing of the project: rfnet builds on it."""
from .augment import AugmentConfig, PhotometricConfig, augment_sample
from .cityscapes import CITYSCAPES_LABEL_ID_TO_TRAIN_ID, CityscapesDataset, CityscapesSpec
from .dataset import SegmentationDataset, open_dataset
from .ianvs_index import IanvsIndexDataset, IanvsIndexSpec, IndexEntry, parse_index
from .importers import import_dataset
from .info import DatasetInfo, summarize
from .labels import IGNORE_LABEL, LabelConfig
from .samples import DatasetError, Sample

__all__ = ["AugmentConfig", "PhotometricConfig", "augment_sample", "CITYSCAPES_LABEL_ID_TO_TRAIN_ID", "CityscapesDataset",
           "CityscapesSpec", "SegmentationDataset", "open_dataset",
           "IanvsIndexDataset", "IanvsIndexSpec", "IndexEntry", "parse_index", "import_dataset", "DatasetInfo",
           "summarize", "IGNORE_LABEL", "LabelConfig", "DatasetError", "Sample"]
