"""Long streams of continuous signing, from the renderer itself: one held-out signer signing many sentences in a row,
with the pauses and transitions a signer makes between them (choreography.choreograph_sentences), as a camera
would film a conversation. Clips of different signers cut together are not signing, and the cut is where joined
videos get their extra errors; these are what live recognition is measured on.

Stream k is held-out signer k (of the held-out signers, by name, round robin) signing their test sentences in the
split's order, from where stream k - (held-out signers) stopped, again from the first when they run out. Each is
written as `streams/stream-<k>.webm` with its reference beside it, in the format `qslr data concat` writes
(pipelines/long_videos.py): the sentences as parts, named by the test clip whose sentence they sign (the clips one
by one are the baseline), and each gloss's sign frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qslr.pipelines.long_videos import JoinedPart, JoinedVideo
from qslr.pipelines.synthetic.choreography import choreograph_sentences
from qslr.pipelines.synthetic.corpus import CorpusPlan, Utterance, stream_rng
from qslr.pipelines.synthetic.render import render_frames
from qslr.pipelines.synthetic.spec import SynthSpec
from qslr.pipelines.video_io import Vp9Settings, write_vp9

FOLDER = "streams"


@dataclass(frozen=True)
class StreamJob:
    spec: SynthSpec
    index: int
    sentences: tuple[Utterance, ...]  # every one signed by the stream's signer
    path: Path


def stream_jobs(plan: CorpusPlan, root: Path) -> list[StreamJob]:
    spec = plan.spec
    heldout = sorted(plan.heldout)
    jobs = []
    for index in range(spec.streams):
        signer = heldout[index % len(heldout)]
        own = [u for u in plan.split("test") if u.signer.name == signer] or \
            [u for u in plan.utterances if u.signer.name == signer]
        first = index // len(heldout) * spec.stream_sentences
        sentences = tuple(own[(first + i) % len(own)] for i in range(spec.stream_sentences))
        jobs.append(StreamJob(spec, index, sentences, root / FOLDER / f"stream-{index}.webm"))
    return jobs


def render_stream(job: StreamJob) -> JoinedVideo:
    """Render and encode one stream, and write its reference beside it."""
    spec, signer = job.spec, job.sentences[0].signer
    choreography = choreograph_sentences([list(u.signs) for u in job.sentences], signer.speed,
                                         stream_rng(spec, job.index, 0))
    placement = tuple(stream_rng(spec, job.index, 1).uniform(-1.0, 1.0, 2) * spec.position_jitter)
    frames = render_frames(signer, choreography, spec.size, spec.size, placement, stream_rng(spec, job.index, 2))
    count = write_vp9(job.path, frames, spec.fps, Vp9Settings(crf=spec.crf))
    signs = choreography.sign_spans([sign for utterance in job.sentences for sign in utterance.signs])
    parts, first_sign = [], 0
    for utterance in job.sentences:
        own = signs[first_sign:first_sign + len(utterance.signs)]
        first_sign += len(utterance.signs)
        first, stop = own[0].first_frame, own[-1].stop
        parts.append(JoinedPart(utterance.id, utterance.glosses, first, stop - first, round(first / spec.fps, 6),
                                round(stop / spec.fps, 6)))
    stream = JoinedVideo(job.path.name, "vp9", float(spec.fps), count, " ".join(u.glosses for u in job.sentences),
                         tuple(parts), signs)
    stream.write_reference(job.path)
    return stream
