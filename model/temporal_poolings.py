"""The poolings TemporalConv's P<size> layers may be, by the names the config gives them, in a module light enough
for the training config to import: VAC's max-pooling, or CorrNet+'s lifting scheme (model/lifting_pool.py)."""

MAX, LIFT = "max", "lift"
POOLINGS = (MAX, LIFT)
