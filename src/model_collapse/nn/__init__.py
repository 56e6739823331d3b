"""Torch building blocks for the neural families: one training loop (trainer.py), the chain-batched
VAE (vae.py), image classifiers (classifier.py) and their torch-free configs (config.py).

Import the submodules directly (``from model_collapse.nn.vae import VAE``); nothing is
imported here, so importing the package stays cheap.
"""
