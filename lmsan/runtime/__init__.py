"""Torch-free runtime guard: ``Guard.load(dir).scan(text)`` -> ``ScanResult``.

Imports numpy, onnxruntime and tokenizers only (plus lmsan's errors, files and pvset), never
torch or transformers: a test imports this package in a subprocess and checks ``sys.modules``.
"""

from lmsan.runtime.calibrate import Calibration, calibrate, write_calibration
from lmsan.runtime.guard import Guard, ScanResult
from lmsan.runtime.removal import SEARCHES, PurgeOutcome
from lmsan.runtime.report import demo_table

__all__ = ["Calibration", "Guard", "PurgeOutcome", "ScanResult", "SEARCHES", "calibrate", "demo_table", "write_calibration"]
