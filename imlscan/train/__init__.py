"""Training: the run's configuration (``config``), processes on several devices (``dist``), the
training loop and its checkpoints (``trainer``) and the weight average (``ema``).
"""
