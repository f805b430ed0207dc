"""Data: every source (IDX, Kaggle CSV, npz, the dataset registry) becomes one :class:`Dataset`.

The usual entry points::

    from digitnet.data import load_dataset, load_file, train_val_split
    train = load_dataset("mnist", "train")          # found locally or downloaded, checksummed
    kaggle = load_file("train.csv")                  # format chosen by content
    train, val = train_val_split(train, 0.1, np.random.default_rng(0))
"""

from digitnet.data.batches import to_float
from digitnet.data.dataset import DIGIT_CLASSES, Dataset
from digitnet.data.datasets import (
    FASHION_CLASSES,
    available_datasets,
    dataset_info,
    download_dataset,
    load_dataset,
)
from digitnet.data.formats import load_file
from digitnet.data.idx import read_idx, write_idx
from digitnet.data.split import train_val_split

__all__ = [
    "DIGIT_CLASSES",
    "FASHION_CLASSES",
    "Dataset",
    "available_datasets",
    "dataset_info",
    "download_dataset",
    "load_dataset",
    "load_file",
    "read_idx",
    "to_float",
    "train_val_split",
    "write_idx",
]
