"""Training: the engine (loop, accumulation, resume), batching, optimisers and schedules, early stopping,
checkpoints, precision-aware kernels (attention, dropout), trackers and progress."""
