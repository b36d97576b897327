"""Data: download, conversion, validation, splits, crops, samplers, datasets."""
