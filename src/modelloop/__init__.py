"""modelloop: track, register, serve, monitor and retrain models as one closed loop."""
