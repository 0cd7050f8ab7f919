"""Reference-model attacks (issue 11): reference models trained from a recipe or supplied with a
keep matrix, their per-scan signals, and the calibrated attacks that use them (calibrated loss,
LiRA offline / online, RMIA, and their gradient-norm variants).

Submodules by role:
    keep: the keep matrix (which reference model trained on which audit scan) and keep.csv.
    calibrated: the attack statistics over target and reference signals.
    recipe, training, store: how references are trained, and where finished ones are kept.
"""
