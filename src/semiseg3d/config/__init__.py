"""The run config: one typed, validated record per training run (:mod:`.run`), and the
method registry that says which methods it may name (:mod:`.registry`). Imports neither
torch nor anything above it (see docs/architecture.md)."""
