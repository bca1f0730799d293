"""The runtime every model family uses: process group, logger, checkpoints, EMA, data,
sample files, run directories and sampling helpers. No model code lives here."""
