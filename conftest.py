"""The package's doctests: the Ray launcher's module imports Ray, which only the ``ray`` extra installs."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("ray") else ["lit_activations/study/ray_cluster.py"]
