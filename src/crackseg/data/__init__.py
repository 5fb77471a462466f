"""Training data: data roots and datasets, transforms, checks, synthetic generators."""
