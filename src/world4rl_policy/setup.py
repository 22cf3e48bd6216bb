from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "world4rl_policy"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/config", ["config/policy_runner.yaml"]),
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
            "action_executor = world4rl_policy.action_executor_node:main",
            "policy_runner = world4rl_policy.policy_runner_node:main",
            "refine = world4rl_policy.refine_cli:main",
            "train_bc = world4rl_policy.train_bc_cli:main",
        ],
    },
)
