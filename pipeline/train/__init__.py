"""Training: the live trainer that draws from the buffers, the shared learner step, DDP, offline training on recordings, augmentation, TensorBoard."""
