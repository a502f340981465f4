"""Datasets, fitted preprocessing, batched augmentation and a device-resident loader for the paper's data."""
from nin.data.augment import Augment, AugmentParams
from nin.data.datasets import (
    SPLITS,
    LabeledImages,
    default_root,
    download_dataset,
    load_dataset,
    resolve_root,
    run_root,
    shares_images,
)
from nin.data.formats import DatasetError
from nin.data.loader import DeviceLoader
from nin.data.preprocess import GCN, LCN, ZCA, Pipeline, Standardize, ToUnitRange, Transform, build_pipeline

__all__ = [
    "GCN", "LCN", "SPLITS", "ZCA", "Augment", "AugmentParams", "DatasetError", "DeviceLoader", "LabeledImages",
    "Pipeline", "Standardize", "ToUnitRange", "Transform", "build_pipeline", "default_root", "download_dataset",
    "load_dataset", "resolve_root", "run_root", "shares_images",
]
