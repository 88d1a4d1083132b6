"""Diffusion training on CosmicMan-HQ snapshots (Daring/HOLA, dual-level prior, activation variants)."""
