"""The corpus plan: vocabulary, signers, and which signer signs which sentence in which split.

Everything is drawn from generators seeded by (seed, purpose[, split, index]), so a video's content
does not depend on how many workers render it or in which order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qslr.pipelines.prepared import SPLITS
from qslr.pipelines.synthetic.signers import SignerLook, make_signers
from qslr.pipelines.synthetic.spec import SynthSpec
from qslr.pipelines.synthetic.vocabulary import SignDefinition, make_vocabulary

_VOCAB, _SIGNERS, _SPLIT_SIGNERS, _SENTENCES, _VIDEO, _STREAM = range(6)


@dataclass(frozen=True)
class Utterance:
    id: str
    split: str
    index: int
    signer: SignerLook
    signs: tuple[SignDefinition, ...]

    @property
    def glosses(self) -> str:
        return " ".join(sign.gloss for sign in self.signs)


@dataclass(frozen=True)
class CorpusPlan:
    spec: SynthSpec
    vocabulary: list[SignDefinition]
    signers: list[SignerLook]
    heldout: frozenset[str]  # signer names that never appear in train
    utterances: list[Utterance]

    def split(self, name: str) -> list[Utterance]:
        return [u for u in self.utterances if u.split == name]


def rng_for(spec: SynthSpec, *key: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, *key])


def video_rng(spec: SynthSpec, utterance: Utterance, stream: int) -> np.random.Generator:
    """Independent streams per video: 0 motion, 1 placement, 2 camera noise."""
    return rng_for(spec, _VIDEO, SPLITS.index(utterance.split), utterance.index, stream)


def stream_rng(spec: SynthSpec, stream_index: int, stream: int) -> np.random.Generator:
    """As `video_rng`, for the streams of sentences signed in a row (pipelines/synthetic/streams.py)."""
    return rng_for(spec, _STREAM, stream_index, stream)


def _sentence(vocab_size: int, spec: SynthSpec, rng: np.random.Generator) -> list[int]:
    length = int(rng.integers(spec.min_glosses, spec.max_glosses + 1))
    sentence: list[int] = []
    while len(sentence) < length:
        # Drawn only when asked for, so that a corpus without repeats is what it was, bit for bit.
        if sentence and spec.repeat_share and rng.random() < spec.repeat_share:
            sentence.append(sentence[-1])
            continue
        # Otherwise a different gloss, so that repeats come at the share asked for.
        gloss = int(rng.integers(vocab_size))
        while sentence and gloss == sentence[-1]:
            gloss = int(rng.integers(vocab_size))
        sentence.append(gloss)
    return sentence


def plan_corpus(spec: SynthSpec) -> CorpusPlan:
    vocabulary = make_vocabulary(spec.vocab, rng_for(spec, _VOCAB))
    signers = make_signers(spec, rng_for(spec, _SIGNERS))
    order = rng_for(spec, _SPLIT_SIGNERS).permutation(len(signers))
    heldout = [signers[i] for i in order[: spec.heldout_signers]]
    seen = [signers[i] for i in order[spec.heldout_signers:]]
    utterances = []
    for split_index, (split, count) in enumerate(spec.split_sizes().items()):
        pool = seen if split == "train" else heldout
        rng = rng_for(spec, _SENTENCES, split_index)
        for index in range(count):
            # Round robin, so every signer of the split appears even in a tiny corpus.
            signer = pool[index % len(pool)]
            signs = tuple(vocabulary[g] for g in _sentence(len(vocabulary), spec, rng))
            utterances.append(Utterance(f"synth-{split}-{index:05d}", split, index, signer, signs))
    return CorpusPlan(spec, vocabulary, signers, frozenset(s.name for s in heldout), utterances)
