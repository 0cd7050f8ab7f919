"""BrainMIA assessment engine: a plain library (no web framework, no task queue).

Subpackages and modules by role:
    manifest, volumes, cache, dataset: scan lists and conformed NIfTI volumes.
    models: built-in architectures, model metadata and safe loading.
    features: per-scan black-box and white-box features.
    attacks: membership-inference attack classifiers, feature sets, repeated splits.
    metrics, verdict: attack metrics with confidence intervals and the policy verdict.
    assessment, report: the end-to-end pipeline and the report document.
    synth: synthetic cohorts built from the MNI152 template.
"""
