"""Layers: the rotary core, rotary and absolute position embeddings, attention."""
