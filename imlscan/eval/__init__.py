"""Evaluation with the field's metrics: datasets scored as ``scan`` scores them (``evaluate``), the
metrics themselves (``metrics``), robustness perturbations (``perturb``) and plots (``plot``).
"""
