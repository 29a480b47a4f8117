"""Every knob of the synthetic corpus in one typed, validated record."""

from __future__ import annotations

from dataclasses import dataclass


class SynthSpecError(ValueError):
    """An impossible combination of generator parameters."""


@dataclass(frozen=True)
class SynthSpec:
    videos: int = 1200
    vocab: int = 40
    signers: int = 16
    heldout_signers: int = 4
    min_glosses: int = 2
    max_glosses: int = 10
    # Share of a sentence's glosses (after its first) that repeat the one before: a sign made twice in a row, as
    # signers do (real corpora annotate such repeats), which a CTC model must separate with a blank.
    repeat_share: float = 0.0
    dev_fraction: float = 0.1
    test_fraction: float = 0.1
    size: int = 72  # frames are size x size pixels
    fps: int = 25
    seed: int = 0
    # Difficulty knobs: how much signers differ from each other and from one video to the next.
    appearance_variation: float = 1.0  # 0: every signer looks the same; 1: realistic tones and builds
    size_jitter: float = 0.1  # relative spread of head, body and hand sizes between signers
    speed_jitter: float = 0.2  # signers sign 1 +- this fast
    position_jitter: float = 0.02  # placement spread, in frame widths
    noise: float = 0.03  # maximum per-pixel camera noise (std, on a 0..1 scale)
    crf: int = 18  # VP9 quality (lower is better)
    # Long streams of continuous signing (pipelines/synthetic/streams.py): this many, each a held-out signer
    # signing this many of their test sentences in a row.
    streams: int = 0
    stream_sentences: int = 20

    def split_sizes(self) -> dict[str, int]:
        dev = max(1, round(self.videos * self.dev_fraction))
        test = max(1, round(self.videos * self.test_fraction))
        return {"train": self.videos - dev - test, "dev": dev, "test": test}

    def validate(self, max_vocab: int) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise SynthSpecError(message)

        need(self.videos >= 3, f"--videos must be at least 3 (one per split), got {self.videos}")
        need(self.min_glosses >= 1, f"--min-glosses must be at least 1, got {self.min_glosses}")
        need(self.max_glosses >= self.min_glosses,
             f"--max-glosses ({self.max_glosses}) is smaller than --min-glosses ({self.min_glosses})")
        need(0 <= self.repeat_share < 1, f"--repeat-share must lie in [0, 1), got {self.repeat_share}")
        # A gloss that is not a repeat differs from the one before, so a sentence of more than one gloss needs
        # at least two of them.
        need(self.vocab >= (2 if self.max_glosses > 1 else 1),
             f"--vocab {self.vocab} is too small for sentences of up to {self.max_glosses} glosses")
        need(self.vocab <= max_vocab, f"--vocab {self.vocab} exceeds the {max_vocab} distinct signs the generator has")
        need(self.heldout_signers >= 1, f"--heldout-signers must be at least 1, got {self.heldout_signers}")
        need(self.signers > self.heldout_signers,
             f"--signers ({self.signers}) must exceed --heldout-signers ({self.heldout_signers})")
        need(0 <= self.dev_fraction < 1 and 0 <= self.test_fraction < 1,
             "--dev-fraction and --test-fraction must lie in [0, 1)")
        sizes = self.split_sizes()
        need(sizes["train"] >= 1, f"--videos {self.videos} leaves no training video after dev and test")
        need(self.size >= 32 and self.size % 2 == 0, f"--size must be an even number >= 32, got {self.size}")
        need(1 <= self.fps <= 120, f"--fps must lie in 1..120, got {self.fps}")
        need(0 <= self.appearance_variation <= 1, "--appearance-variation must lie in [0, 1]")
        need(0 <= self.size_jitter < 0.5, "--size-jitter must lie in [0, 0.5)")
        need(0 <= self.speed_jitter < 0.5, "--speed-jitter must lie in [0, 0.5)")
        need(0 <= self.position_jitter <= 0.1, "--position-jitter must lie in [0, 0.1]")
        need(0 <= self.noise <= 0.2, "--noise must lie in [0, 0.2]")
        need(0 <= self.crf <= 63, f"--crf must lie in 0..63, got {self.crf}")
        need(self.streams >= 0, f"--streams must be 0 or more, got {self.streams}")
        need(self.stream_sentences >= 1, f"--stream-sentences must be at least 1, got {self.stream_sentences}")
