"""Scoring recognised glosses against references: normalisation, CTM/STM, sclite-exact WER."""
