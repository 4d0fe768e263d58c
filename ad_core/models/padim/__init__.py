"""PaDiM: its spec, wrapper (fit, exact merge of statistics) and export graph.

Importing the package imports nothing heavy: the wrapper and the graph (torch) live in their own
modules, imported on use through the spec.
"""
