"""Training stage: datasets, backbones, the two students and the semi-supervised loop (needs torch)."""
