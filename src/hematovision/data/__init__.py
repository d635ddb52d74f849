"""Data: class-per-folder sets, the decode cache, splits, the simulator, inspection, downloads."""

from .cache import DecodeCache
from .fetch import SOURCES, fetch
from .folders import (
    DecodedImages,
    ImageFolder,
    UnknownClasses,
    decode_folder,
    decode_labelled,
    limit_per_class,
    normalize_class_name,
    scan_folder,
)
from .inspect import inspect_folder
from .splits import SplitManifest, stratified_split
from .synth import SYNTH_CLASSES, make_synthetic

__all__ = [
    "DecodeCache",
    "DecodedImages",
    "ImageFolder",
    "SOURCES",
    "SYNTH_CLASSES",
    "SplitManifest",
    "UnknownClasses",
    "decode_folder",
    "decode_labelled",
    "fetch",
    "inspect_folder",
    "limit_per_class",
    "make_synthetic",
    "normalize_class_name",
    "scan_folder",
    "stratified_split",
]
