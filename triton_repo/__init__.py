"""Triton model-repository sources (config templates and python models), package data for `qslr triton build`."""
