"""Names of the served models, spelled once. Each is a folder of triton_repo/ and of a built repository (the model's
name is its folder's); templates get them as ``${...}`` placeholders from the builder, and the client, the server and
the tools import them from here."""

PREPROCESS = "preprocess"  # uploaded video bytes -> frames at the model's size
VISUAL = "visual"  # frames -> log-probabilities (the exported network)
CTC_DECODER = "ctc_decoder"  # log-probabilities -> glosses
CSLR_CLIP = "cslr_clip"  # ensemble: a clip's video bytes -> glosses
CSLR_FRAMES = "cslr_frames"  # ensemble: decoded frames -> glosses
CSLR = "cslr"  # a video of any length -> glosses: what clients call

# Every model of a repository, in the order the builder writes them.
MODELS = (PREPROCESS, VISUAL, CTC_DECODER, CSLR_CLIP, CSLR, CSLR_FRAMES)
