"""The pruning passes: calibration statistics, masks, layer allocations, unstructured and structured engines."""
