"""PatchCore: its spec, wrapper (fit, update), coreset, export graph and deployed head (bank search).

Importing the package imports nothing heavy: the wrapper and the graph (torch) live in their own
modules, imported on use through the spec.
"""
