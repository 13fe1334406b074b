"""Amortized text-to-3D: one text-conditioned generator trained over a prompt set (``train``), then an asset for a
new prompt in one forward pass (``generate``)."""
