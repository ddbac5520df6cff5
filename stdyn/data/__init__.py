"""Data: the cache, real videos, optical flow, and the synthetic worlds of each task."""
