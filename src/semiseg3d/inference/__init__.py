"""Inference: sliding window, post-processing, test-set runs, prediction on new scans."""
