"""EfficientAD: its spec and wrapper (offline teacher, training, fine-tuning).

Importing the package imports nothing heavy: the wrapper and the graph (torch) live in their own
modules, imported on use through the spec.
"""
