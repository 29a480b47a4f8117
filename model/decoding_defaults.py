"""The CTC decoder's choices and defaults, stated once, in a module light enough for the training config and the
command lines to import (model/decoding.py imports PyTorch). The config's decode section, the decoder itself, the
served decoder and the repository builder all take them from here."""

GREEDY, BEAM = "greedy", "beam"
METHODS = (BEAM, GREEDY)
BEAM_BACKENDS = ("flashlight", "ctcdecode")  # ctcdecode only where it is installed

METHOD = BEAM
BACKEND = "flashlight"
BEAM_SIZE = 10  # VAC's
BEAM_SIZE_TOKEN = 40  # tokens expanded per frame (ctcdecode's cutoff_top_n)
# The original's rule: a gloss repeated across a blank is one gloss (model/decoding.py says when it is not wanted).
MERGE_REPEATS = True

# Streaming decoding (model/streaming_decoding.py): a segment of output steps closes at a step this sure of the
# blank after a step that is not (a pause after a sign), or at this many steps where the signer never pauses.
COMMIT_BLANK_PROBABILITY = 0.9
MAX_SEGMENT_STEPS = 64
# Live streams' windows (deploy/serving/streaming.py), in frames: a gloss is final about half a middle part and the
# right context after it is signed, tentative sooner. Chosen by `qslr bench live` on the demo model
# (docs/benchmarks.md, "Live recognition"): 32/8 made glosses final 0.69-0.86 s after their signs (p50, 1-16 streams)
# where 48/8 took 0.93-1.24 s, for a third more frames run; less context than 8 frames risks the windows' edges.
LIVE_WINDOW_FRAMES = 32
LIVE_CONTEXT_FRAMES = 8
