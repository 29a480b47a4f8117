"""What a DALI decoder hands to PyAV is counted and said: once per reason, then as its count passes each power
of ten, with the NVDEC advice only where NVDEC was meant to run."""

from __future__ import annotations

import logging

from qslr.deploy.decoder_fallbacks import CODEC, RUN_FAILED, UNAVAILABLE, DecoderFallbacks


def test_each_reason_is_said_once_then_as_its_count_passes_a_power_of_ten():
    lines = []
    fallbacks = DecoderFallbacks("dali-gpu", lines.append)
    fallbacks.record(RUN_FAILED, 3, "RuntimeError: Video is too large; a run of 3")
    assert lines == ["dali-gpu video decoder: DALI failed a run as a whole (one broken upload does that), so PyAV "
                     "decodes each of its uploads (RuntimeError: Video is too large; a run of 3); in a container NVDEC "
                     "needs NVIDIA_DRIVER_CAPABILITIES to include video (docker run -e "
                     "NVIDIA_DRIVER_CAPABILITIES=compute,utility,video). Uploads decoded by PyAV for this reason so "
                     "far: 3"]
    for uploads in (5, 1):  # 8, 9: nothing more to say
        fallbacks.record(RUN_FAILED, uploads)
    assert len(lines) == 1
    fallbacks.record(RUN_FAILED, 4)  # 13: past ten
    fallbacks.record(RUN_FAILED, 80)  # 93
    fallbacks.record(RUN_FAILED, 7)  # 100
    assert lines[1:] == [f"dali-gpu video decoder: uploads decoded by PyAV so far because DALI failed a run as a "
                         f"whole (one broken upload does that), so PyAV decodes each of its uploads: {n}"
                         for n in (13, 100)]
    fallbacks.record(CODEC, 2, "mpeg2video")  # another reason: said on its own, without the NVDEC advice
    assert lines[-1].startswith("dali-gpu video decoder: DALI does not decode this codec on this device, so PyAV "
                                "decodes such uploads (mpeg2video). Uploads")
    assert fallbacks.counts == {RUN_FAILED: 100, CODEC: 2} and fallbacks.total == 102


def test_a_decoder_that_cannot_start_says_so_before_any_upload_and_by_default_in_the_log(caplog):
    with caplog.at_level(logging.WARNING, logger="qslr.deploy.decoder_fallbacks"):
        fallbacks = DecoderFallbacks("dali")
        fallbacks.record(UNAVAILABLE, 0, "ImportError: No module named 'nvidia.dali'")
        fallbacks.record(UNAVAILABLE, 4)
    (said,) = [r.getMessage() for r in caplog.records]
    assert said == ("dali video decoder: DALI could not start here, so PyAV decodes every upload (ImportError: No "
                    "module named 'nvidia.dali')")  # the CPU decoder: no NVDEC advice
    assert fallbacks.counts == {UNAVAILABLE: 4}
