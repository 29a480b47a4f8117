"""The loaders' names, in a module light enough for the training config and the command lines to import
(pipelines/loaders.py imports DALI and PyTorch): both yield the same Batch from the same plans."""

LOADERS = ("dali", "reference")
