"""Evaluation: FID/KID/IS through torch-fidelity (`fidelity`) and a 3D-consistency score (`consistency`).

`eval.py` (GRAM-HD's flags) and `fid_evaluation.py` (GRAM's flags) are thin command lines over `runner`.
"""
