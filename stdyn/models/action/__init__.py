"""Action recognition models: 3D CNNs (C2D, I3D, SlowOnly, FastOnly, SlowFast, X3D), the
transformers (TimeSformer, MViT) and the torchvision video models."""
