"""The INT8 export's choices, kept apart from the quantiser so that the command line offers them without importing
onnx or a video decoder."""

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")  # onnxruntime's calibrators
# MinMax: on the demo model all three give the same test WER, and MinMax keeps the most greedy labels
# (docs/benchmarks.md).
DEFAULT_METHOD = "minmax"
