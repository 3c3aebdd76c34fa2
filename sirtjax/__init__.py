"""sirtjax: JAX tools for SIRT (90Y radioembolization) imaging, registration and dosimetry.

Subpackages are imported on demand (``import sirtjax.registration``); this module stays light so
that the command line starts quickly.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sirtjax")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
