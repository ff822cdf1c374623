"""What runs a detector over data: training, evaluation and prediction, checkpoints, metrics, reports and
robustness perturbations."""
