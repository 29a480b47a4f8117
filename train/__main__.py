"""``python -m train --config PRESET [key=value ...]``: one rank of a (torchrun) training run."""

from qslr.train.cli import train_entry

train_entry(prog_name="python -m train")
