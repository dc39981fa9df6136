"""Baselines T2V-Turbo is compared against (not the method itself): `chain` is DRaFT-K / VADER reward
fine-tuning by backpropagation through the last K steps of a sampling chain."""
