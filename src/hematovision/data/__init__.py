"""Data: class-per-folder sets, the decode cache, splits, the simulator, inspection, downloads."""

from .cache import DecodeCache
from .fetch import SOURCES, fetch
from .folders import DecodedImages, ImageFolder, decode_folder, normalize_class_name, scan_folder
from .inspect import inspect_folder
from .splits import SplitManifest, stratified_split
from .synth import SYNTH_CLASSES, make_synthetic

__all__ = ["DecodeCache", "DecodedImages", "ImageFolder", "SOURCES", "SYNTH_CLASSES",
           "SplitManifest", "decode_folder", "fetch", "inspect_folder", "make_synthetic",
           "normalize_class_name", "scan_folder", "stratified_split"]
