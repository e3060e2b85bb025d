"""The configs of the experiment scripts: each module's `get_config(arg)`.

`base` builds the full set of fields (declared in `mrmc_jax.runner.fields`)
and applies a config string's presets and `field=value` overrides; every
other module is one data set's config, selected on the command line by the
thin file of the same name in the repository's `configs/`
(`--config=configs/cifar10.py:quick`) or by this file's own path. These
modules sit above the runner: they import its field declarations, and the
runner never imports them.
"""
