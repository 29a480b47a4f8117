"""Tensor names of the served models, spelled once: templates, model.py files and the client use these."""

VIDEO = "video"  # encoded video file bytes, UINT8 [N]
FRAMES = "frames"  # decoded frames, UINT8 [T, H, W, 3]
LENGTHS = "lengths"  # valid frames, INT64 [1]
FPS = "fps"  # the uploaded video's frame rate, FP32 [1] (0 where its container states none)
LOG_PROBS = "log_probs"  # FP32 [T', V]
OUTPUT_LENGTHS = "output_lengths"  # INT64 [1]
TOPK_LOG_PROBS = "topk_log_probs"  # FP32 [T', k]: the exported graph's optional k best classes per step
TOPK_IDS = "topk_ids"  # INT64 [T', k]
GLOSSES = "glosses"  # BYTES [G]: the recognised glosses
GLOSS_STEPS = "gloss_steps"  # INT64 [G]: output step where each gloss starts
GLOSS_START_S = "gloss_start_s"  # FP32 [G]: where each gloss starts in the video, in seconds
GLOSS_END_S = "gloss_end_s"  # FP32 [G]: where it ends
SCORE = "score"  # FP32 [1]
ALTERNATIVES = "alternatives"  # BYTES [K]: the best distinct gloss sequences, best first, glosses space-separated
ALTERNATIVE_SCORES = "alternative_scores"  # FP32 [K]
FRAMING = "framing"  # BYTES [1]: what was done to an uploaded video (JSON of pipelines/framing.py's FramingRecord)

# The served signature (ServedModel, its ONNX graph, the TensorRT engine, the visual model).
INPUTS = (FRAMES, LENGTHS)
OUTPUTS = (LOG_PROBS, OUTPUT_LENGTHS)
# A recognition, as every model that answers with glosses gives it (ctc_decoder, the ensembles, cslr).
RECOGNITION = (GLOSSES, GLOSS_STEPS, GLOSS_START_S, GLOSS_END_S, SCORE, ALTERNATIVES, ALTERNATIVE_SCORES)
# A recognition of an uploaded video (the ensembles and models that take one: cslr, cslr_clip), with its framing.
VIDEO_RECOGNITION = (*RECOGNITION, FRAMING)

BEAM_SIZE_PARAMETER = "beam_size"  # request parameter: beam width, 0 for greedy
TOP_K_PARAMETER = "top_k"  # request parameter: how many alternatives (1 by default)
FRAMING_PARAMETER = "framing"  # request parameter: crop or letterbox a video of another aspect (default: the model's)
REGION_PARAMETER = "region"  # request parameter: the signer's region, "x,y,width,height" of the upright picture
# ctc_decoder request parameter: true for the output of several windows, decoded in segments as a live stream is
IN_SEGMENTS_PARAMETER = "in_segments"
