"""The loss terms' names, stated once, in a module light enough for the training config to import (model/losses.py
imports PyTorch). Each is a key of the config's ``loss.weights`` and a column of the metrics log."""

SEQ_CTC, CONV_CTC, DIST = "SeqCTC", "ConvCTC", "Dist"
# CorrNet+'s lifting pools (model/lifting_pool.py): how far the update step's smooth sequence lies from the odd
# steps, and the size of the prediction's residual (the detail), summed over the pools.
UPDATE, PREDICTION = "Cu", "Cp"
LIFTING = (UPDATE, PREDICTION)
TERMS = (SEQ_CTC, CONV_CTC, DIST, *LIFTING)
