"""lensfm: a JAX/Flax foundation model for strong gravitational lensing."""
import setuptools

INSTALL_REQUIRES = [
    "jax>=0.7",
    "flax>=0.10",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    "tensorflow-datasets>=4.9.7",
    "array_record>=0.7",
    "grain>=0.2.10",
    "ml_collections>=1.0",
    "numpy>=1.26",
    "e3nn-jax>=0.20",
    "absl-py",
    "tensorboardX>=2.6",  # Writes the event files (no TensorFlow).
    "tensorboard",        # The `tensorboard --logdir WORKDIR` viewer.
    "pillow",             # Reads the PNG pictures back for TensorBoard.
    "tqdm",
    "matplotlib",
    "astropy",  # FITS input for predict mode.
]

TEST_REQUIRES = [
    "pytest>=8",
    "pytest-xdist",
    "scikit-learn",  # reference metrics
    "scikit-image",  # reference SSIM
    "lenstronomy",   # reference simulator
]

# Benchmarks against other tools only (experiments/benchmarks/vs_torch.py); never imported by lensfm.
BENCH_REQUIRES = [
    "torch>=2.4",
]

setuptools.setup(
    name="lensfm",
    version="0.1.0",
    description="A JAX/Flax foundation model for strong gravitational lensing.",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["lensfm", "lensfm.*"]),
    # Shipped checkpoints ('lensfm:tiny'): orbax files, config.json and MODEL_CARD.md.
    package_data={"lensfm": ["weights/*/*.json", "weights/*/*.md", "weights/*/checkpoints/**/*"]},
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES, "bench": BENCH_REQUIRES},
    license="Apache-2.0",
    license_files=["LICENSE"],
)
