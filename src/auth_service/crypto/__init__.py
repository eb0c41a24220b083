"""Thin wrappers over well-kept libraries; nothing here hand-rolls a primitive."""
