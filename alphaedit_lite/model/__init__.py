"""Model access: the architecture table, weight get/set, loading (hub, GGUF cache), forward hooks."""
