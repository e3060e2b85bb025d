"""mrmc_jax: core-set selection by Maximum Reduction as Maximum Contribution."""

import setuptools

# Direct dependencies, pinned. `requirements.txt` pins the whole resolved
# environment; `pip install -r requirements.txt -e .` reproduces it exactly.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "chex==0.1.92",
    "ml-collections==1.1.0",
    "clu==0.0.12",
    "tensorflow-cpu==2.21.0",
    "tensorboard==2.21.0",
    "tensorflow-datasets==4.9.10",
    # tfds needs it to prepare data sets but declares it only for Python < 3.9.
    "importlib_resources==7.1.0",
    "numpy==2.4.6",
    "scipy==1.17.1",
    # Ships the UCI digits file that is the embedded offline default data set.
    "scikit-learn==1.9.1",
    "matplotlib==3.11.2",
]

setuptools.setup(
    name="mrmc_jax",
    version="0.2.0",
    description=(
        "Core-set selection by Maximum Reduction as Maximum Contribution "
        "(MRMC) in JAX/Flax, with peer methods and an experiment runner."
    ),
    packages=setuptools.find_packages(include=["mrmc_jax", "mrmc_jax.*"]),
    python_requires=">=3.11,<3.12",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest==9.2.0"]},
)
