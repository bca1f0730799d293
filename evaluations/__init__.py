"""Everything that judges samples: FID, converters between npz and images, sample grids,
the offline digits metric and the comparison report. Trains no generative model."""
