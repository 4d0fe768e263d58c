"""The VAE: its spec, torch module and wrapper.

Importing the package imports nothing heavy: the wrapper and the graph (torch) live in their own
modules, imported on use through the spec.
"""
