"""mrmc_jax: core-set selection by Maximum Reduction as Maximum Contribution."""
