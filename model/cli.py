"""`qslr model`: inspect networks and convert checkpoints."""

from __future__ import annotations

import click


@click.group("model")
def model() -> None:
    """Build, inspect and convert VAC/SMKD networks (original checkpoints arrive with the model issue)."""
