"""Data: every source (IDX, Kaggle CSV, npz, the dataset registry) becomes one :class:`Dataset`."""

from digitnet.data.dataset import DIGIT_CLASSES, Dataset

__all__ = ["DIGIT_CLASSES", "Dataset"]
