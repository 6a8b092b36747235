"""Models on disk: the catalog, installed and packaged models, and GGUF metadata."""
