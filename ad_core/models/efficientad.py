"""EfficientAD (placeholder until its module lands in this package)."""
