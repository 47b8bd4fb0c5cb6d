"""Helpers shared by the scripts and the networks: checkpoint I/O, seeds, image writing."""
