"""FER datasets: readers for the common layouts, a decode cache and batch augmentation."""
from .readers import FaceDataset, SPLITS, load_dataset

__all__ = ["FaceDataset", "SPLITS", "load_dataset"]
