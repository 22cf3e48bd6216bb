"""`world4rl security`: SROS2 for the collect and deploy graphs (world4rl_bringup.security).

  world4rl security policy --out DIR
      writes DIR/world4rl_policy.xml (sros2's policy format: one enclave per node, who may command
      the arm) and DIR/governance.xml, and prints who may command the arm and call its services.
  world4rl security keystore KEYSTORE
      on the robot PC (`ros2 security`, apt's sros2): creates the keystore with this governance if
      it does not exist yet (`ros2 security create_keystore` signs the governance.xml it finds), then
      every enclave with its signed permissions (`ros2 security generate_artifacts -p POLICY`), and
      says how to run the graphs with security:=true. Run again after a change to the graphs or a
      robot profile's command mode: certificates are kept, permissions rewritten.

The permissions and the governance name one ROS domain: --domain-id, default ROS_DOMAIN_ID (or 0);
run the graphs on that domain.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

POLICY_FILE = "world4rl_policy.xml"  # in a namespace: world4rl_policy_NS.xml
# What `ros2 security generate_artifacts` leaves in every enclave directory.
ENCLAVE_FILES = ("cert.pem", "key.pem", "governance.p7s", "permissions.xml", "permissions.p7s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    policy = sub.add_parser("policy", help="write the SROS2 policy and governance of the graphs")
    policy.add_argument("--out", type=Path, required=True, help="directory for world4rl_policy.xml, governance.xml")
    keystore = sub.add_parser("keystore", help="create or update the keystore and its enclaves (robot PC, ros2)")
    keystore.add_argument("keystore", type=Path, help="keystore directory (ROS_SECURITY_KEYSTORE)")
    keystore.add_argument(
        "--dry-run", action="store_true", help="write the policy and the governance, print the commands, run nothing"
    )
    for p in (policy, keystore):
        p.add_argument(
            "--namespace", default="", help="the graphs' namespace (launch argument namespace); default: the root"
        )
        p.add_argument("--domain-id", type=int, default=None, help="ROS domain (default: ROS_DOMAIN_ID, or 0)")


def _domain(args: argparse.Namespace) -> int:
    return args.domain_id if args.domain_id is not None else int(os.environ.get("ROS_DOMAIN_ID") or 0)


def policy_file_name(namespace: str) -> str:
    from world4rl_spec.topics import normalize_namespace

    suffix = normalize_namespace(namespace).strip("/").replace("/", "_")
    return POLICY_FILE.replace(".xml", f"_{suffix}.xml") if suffix else POLICY_FILE


def write_documents(directory: Path, namespace: str, domain_id: int) -> tuple[Path, str, str]:
    """Write the policy into `directory`; return its path, its text and the governance's text."""
    from world4rl_bringup.security import governance_xml, policy_xml

    policy = policy_xml(namespace=namespace)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / policy_file_name(namespace)
    path.write_text(policy)
    return path, policy, governance_xml(domain_id)


def _print_audit(policy: str, namespace: str) -> None:
    from world4rl_bringup.security import audit

    print("who may (from the policy, as DDS Security enforces it: deny first, default deny):")
    for line in audit(policy, namespace):
        print(f"  {line}")


def run_policy(args: argparse.Namespace) -> int:
    path, policy, governance = write_documents(args.out, args.namespace, _domain(args))
    (args.out / "governance.xml").write_text(governance)
    print(f"wrote {path} and {args.out / 'governance.xml'} (domain {_domain(args)})")
    _print_audit(policy, args.namespace)
    return 0


def place_governance(keystore: Path, governance: str) -> bool:
    """Put the governance where `ros2 security create_keystore` signs it; True when the keystore is
    new. An existing keystore must already have this governance (ValueError otherwise)."""
    path = keystore / "enclaves" / "governance.xml"
    if (keystore / "enclaves" / "governance.p7s").exists():
        if not path.is_file() or path.read_text() != governance:
            raise ValueError(
                f"{keystore} was created with another governance ({path}): use a new keystore directory, or delete "
                f"{path} and governance.p7s there and run this again, then regenerate every enclave"
            )
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(governance)
    return True


def keystore_commands(keystore: Path, policy_path: Path, new: bool) -> list[list[str]]:
    """The `ros2 security` commands that make the keystore (if `new`) and every enclave of the policy."""
    commands = [["ros2", "security", "create_keystore", str(keystore)]] if new else []
    return [*commands, ["ros2", "security", "generate_artifacts", "-k", str(keystore), "-p", str(policy_path)]]


def missing_artifacts(keystore: Path, policy: str, domain_id: int) -> list[str]:
    """What a generated keystore lacks: an enclave's files, or the governance of this domain."""
    import xml.etree.ElementTree as ET

    missing = []
    for enclave in ET.fromstring(policy).iter("enclave"):
        directory = keystore / "enclaves" / enclave.get("path").lstrip("/")
        missing += [str(directory / f) for f in ENCLAVE_FILES if not (directory / f).exists()]
    signed = keystore / "enclaves" / "governance.p7s"
    if not signed.is_file() or f"<id>{domain_id}</id>" not in signed.read_text(errors="replace"):
        missing.append(f"{signed} (signed governance of domain {domain_id})")
    return missing


def _usage_text(keystore: Path, namespace: str, domain_id: int) -> str:
    from world4rl_bringup.security import OPERATOR, TELEOP, enclave_path

    return f"""
Keystore ready: {keystore} (ROS domain {domain_id}). Its private/ directory holds the CA key that signs
every permission: keep it readable by you only, or off the robot PC.
Run the graphs in their enclaves (every process gets ROS_SECURITY_ENABLE=true, ROS_SECURITY_STRATEGY=Enforce):
  export ROS_SECURITY_KEYSTORE={keystore} ROS_DOMAIN_ID={domain_id}
  ros2 launch world4rl_bringup deploy.launch.py robot:=franka ... security:=true
The operator's shell (ros2 service call, ros2 topic echo, world4rl collect --attach; ros2 daemon stop first):
  export ROS_SECURITY_KEYSTORE={keystore} ROS_DOMAIN_ID={domain_id} ROS_SECURITY_ENABLE=true \\
         ROS_SECURITY_STRATEGY=Enforce ROS_SECURITY_ENCLAVE_OVERRIDE={enclave_path(OPERATOR, namespace)}
The keyboard teleoperator, from that shell:
  ROS_SECURITY_ENCLAVE_OVERRIDE={enclave_path(TELEOP, namespace)} ros2 run world4rl_bringup keyboard_teleop"""


def run_keystore(args: argparse.Namespace) -> int:
    keystore, domain_id = args.keystore.expanduser().resolve(), _domain(args)
    policy_path, policy, governance = write_documents(keystore, args.namespace, domain_id)
    try:
        new = place_governance(keystore, governance)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    commands = keystore_commands(keystore, policy_path, new)
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id)}
    for command in commands:
        print(f"ROS_DOMAIN_ID={domain_id} {' '.join(command)}", flush=True)
        if args.dry_run:
            continue
        if shutil.which(command[0]) is None:
            print("error: no `ros2` here: run this on the robot PC (source /opt/ros/jazzy/setup.bash)", file=sys.stderr)
            return 1
        if subprocess.run(command, env=env).returncode != 0:
            print(f"error: {' '.join(command)} failed", file=sys.stderr)
            return 1
    _print_audit(policy, args.namespace)
    if args.dry_run:
        return 0
    missing = missing_artifacts(keystore, policy, domain_id)
    if missing:
        print("error: the keystore lacks:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    print(_usage_text(keystore, args.namespace, domain_id))
    return 0


def run(args: argparse.Namespace) -> int:
    return run_policy(args) if args.action == "policy" else run_keystore(args)


def main(argv: list[str] | None = None) -> int:
    from world4rl_bringup.cli import run_alone

    return run_alone("world4rl security", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
