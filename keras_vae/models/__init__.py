"""Model families beside the single-latent `VAE`, one module per member."""
