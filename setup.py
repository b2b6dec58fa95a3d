"""The package layout pyproject.toml cannot express (everything else is in pyproject.toml).

The source tree keeps the project's top-level layout (`conf/`, `plugins/`, `experiments/` beside `t2s/`); the wheel
ships `plugins/` as the package `t2s_plugins` (a generic top-level name such as `plugins` would clash with other
distributions) and `conf/` (with the experiments behind `conf/experiment`) as package data under `t2s/conf/`, where
`t2s.config.CONF_DIR` finds it in an installed package. An editable install maps `t2s_plugins` to `plugins/`.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["t2s", "t2s.*"]),
        "t2s_plugins",
        *(f"t2s_plugins.{p}" for p in find_packages("plugins")),
        "t2s.conf",
    ],
    package_dir={"t2s_plugins": "plugins", "t2s.conf": "conf"},
    package_data={
        "t2s": ["py.typed", "prompts/*.yaml", "demo/**/*", "serve/static/*"],
        "t2s.conf": ["*.yaml", "*/*.yaml", "*/*/*.yaml"],
        "t2s_plugins": ["**/*.yaml"],
    },
)
