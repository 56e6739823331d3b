"""Torch building blocks for the neural families: image classifiers (classifier.py) and the chain-batched VAE (vae.py).

Import the submodules directly (``from model_collapse.nn.vae import VAENet``); nothing is
imported here, so importing the package stays cheap.
"""
