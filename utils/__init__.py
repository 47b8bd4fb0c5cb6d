"""Helpers shared by the scripts and the networks: atomic writes, checkpoint I/O, seeds, image writing."""
