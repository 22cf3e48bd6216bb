from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "world4rl_bringup"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", [p for p in glob("config/*") if Path(p).is_file()]),
        (f"share/{PACKAGE}/config/graphs", glob("config/graphs/*.yaml")),
        (f"share/{PACKAGE}/config/robots", glob("config/robots/*.yaml")),
    ],
    package_data={PACKAGE: ["py.typed"]},
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="World4RL maintainers",
    maintainer_email="maintainers@world4rl.dev",
    description=Path("package.xml").read_text().split("<description>")[1].split("</description>")[0],
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "world4rl = world4rl_bringup.cli:main",
            "keyboard_teleop = world4rl_bringup.keyboard_teleop_node:main",
            "camera = world4rl_bringup.camera_node:main",
            "episode_recorder = world4rl_bringup.episode_recorder_node:main",
        ],
    },
)
