"""Pretraining the embedded base model (the project's SD 1.5 stand-in).

A LAION-like corpus of synthetic renders with weak alt-text captions (:mod:`corpus`),
then, in order, a small ``AutoencoderKL`` (:mod:`vae`), a CLIP text encoder trained
contrastively against a small image tower with a BPE tokenizer built from the corpus
vocabulary (:mod:`clip`), and a latent ``UNet2DConditionModel`` (:mod:`unet`); :mod:`run`
chains them with checkpoints and MLflow and writes a ``StableDiffusionPipeline`` directory.
"""
