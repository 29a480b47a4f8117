"""The shipped YAML presets, package data found through importlib.resources."""
