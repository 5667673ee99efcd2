"""automtl: compact multi-task vision models from a Caffe-style backbone (the AutoMTL method)."""

__version__ = "0.1.0"
