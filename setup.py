import re
from pathlib import Path

from setuptools import setup

VERSION = re.search(r'__version__ = "(.+)"', (Path(__file__).parent / "vdsm" / "__init__.py").read_text()).group(1)

DOCS = ["sphinx>=7,<10", "myst-nb>=1,<2", "furo>=2024.1"]

setup(
    name="vdsm",
    version=VERSION,
    description="Disentangled sequential generative models of video (VDSM, SVG, SRVP, DSA, C-DSVAE) on Pyro",
    python_requires=">=3.9",
    packages=["vdsm", "vdsm.nets", "vdsm.metrics", "models", "guides", "data", "experiments", "experiments.configs"],
    package_data={"experiments.configs": ["*/*.json"]},
    install_requires=[
        "torch>=2.4,<3",   # torch.get_autocast_dtype, is_autocast_enabled(device_type)
        "torchvision>=0.19,<1",
        "pyro-ppl>=1.8.6,<2",
        "numpy>=1.24,<3",
        "natsort>=8,<9",
        "imageio>=2.28,<3",
        "av>=12,<20",   # decodes and writes the user's videos (--dataset videos), through PyAV directly
        "antialiased-cnns>=0.3,<1",
        "tqdm>=4.60,<5",
        "pillow>=10.1,<14",
        "tensorboard>=2.12,<3",
        "matplotlib>=3.6,<4",
        "scipy>=1.10,<2",
        "lpips>=0.1.4,<0.2",
        "simple-parsing>=0.1.5,<0.2",   # the help line of each config field, read from its comment
        "kornia>=0.7,<1",   # C-DSVAE's SimCLR motion view: per-video random augmentations, batched
    ],
    extras_require={
        # the docs site: Sphinx with autodoc, MyST pages and the notebooks rendered by myst-nb
        "docs": DOCS,
        # the suite builds the docs too (tests/test_docs.py)
        "test": ["pytest>=7", "scikit-image>=0.21", "nbclient>=0.8", "nbformat>=5.9", "ipykernel>=6", *DOCS],
        "notebooks": ["jupyter", "matplotlib>=3.6"],
    },
)
