"""Helpers of the rendering scripts (inference.py): 3D outputs (depth / normal maps) and latent
interpolation videos. Imports run one way: scripts -> rendering -> generators -> utils."""
