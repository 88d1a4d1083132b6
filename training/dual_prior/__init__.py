"""Dual-level prior training ("Enhancing human body generation in diffusion models with
dual-level prior knowledge"): bind human tokens to the person's shape and a learnable pose
token to the skeleton (stage 1), then rectify the maps adversarially (stage 2)."""
