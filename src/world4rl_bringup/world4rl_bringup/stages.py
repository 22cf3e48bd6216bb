"""The stage engine behind `world4rl demo` and `world4rl coverage`: resumable pipelines whose
stages rerun when their settings change.

RUN/stages.json records, per stage key, the settings it finished with, a digest over them and
over the runs of the stages it builds on (`after`), and an id of that run. A stage runs when:
- it never finished;
- its digest differs from the recorded one: one of its settings changed, or a stage it builds on
  ran again since (its output changed). It says which, then reruns;
- it is named in `redo` (a key, or the part before '/', e.g. "bc" for "bc/push").
Otherwise it is skipped. Before a rerun, the stage's `fresh` outputs (folders or files that a
rerun must build from scratch, e.g. a training run that would otherwise resume from its old
checkpoint) are moved aside to RUN/superseded/, never deleted: nothing trained or recorded is
lost. Stages without `fresh` outputs top up what they have (e.g. data stages adding the episodes
that are missing).

A stage books its wall and CPU time, including attempts that were stopped before they finished
(a resumed training run, a pipeline restarted the next day): while a stage runs, its time so far is
written every `heartbeat_s` to RUN/stages_partial.json, and the attempt that finishes adds the
earlier attempts' time when their settings and inputs were the same (not after a rerun, whose
earlier output was moved aside).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from world4rl_model.atomic_io import atomic_write_bytes

BOOK_NAME = "stages.json"
PARTIAL_NAME = "stages_partial.json"
HEARTBEAT_S = 30.0  # how much of a stopped attempt's time can go unbooked
SUPERSEDED_DIR = "superseded"


def settings_digest(settings: dict[str, Any], upstream: dict[str, str] | None = None) -> str:
    payload = {"settings": settings, "after": upstream or {}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _legacy_digest(settings: dict[str, Any]) -> str:
    """The digest books written before `after` existed recorded (settings only)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


# Settings that change how a stage shows its work, not what it makes: no reason to run it again.
COSMETIC_SETTINGS = frozenset({"progress"})


def _substance(settings: dict[str, Any]) -> dict[str, Any]:
    plain = json.loads(json.dumps(settings, default=str))
    return {k: v for k, v in plain.items() if k not in COSMETIC_SETTINGS}


def _changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    old = json.loads(json.dumps(old, default=str))
    new = json.loads(json.dumps(new, default=str))
    changed = (k for k in old.keys() | new.keys() if old.get(k, "<unset>") != new.get(k, "<unset>"))
    return sorted(k for k in changed if k not in COSMETIC_SETTINGS)


class StageBook:
    """RUN/stages.json: which stages finished, with which settings and how long they took."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / BOOK_NAME
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def entry(self, key: str) -> dict[str, Any] | None:
        entry = self.data.get(key)
        return entry if entry and entry.get("done") else None

    def run_id(self, key: str) -> str:
        """Names the last finished run of a stage ("" if it has not finished): what a later stage
        that builds on it records, so that a rerun of this one reruns that one too."""
        entry = self.entry(key)
        return entry.get("run_id", entry["settings_sha256"]) if entry else ""

    def matches(self, key: str, settings: dict[str, Any], upstream: dict[str, str]) -> bool:
        entry = self.entry(key)
        if entry is None:
            return False
        if "after" not in entry:  # a book from before `after`: only the settings were recorded
            return entry["settings_sha256"] == _legacy_digest(settings)
        if entry["settings_sha256"] == settings_digest(settings, upstream):
            return True
        recorded = entry.get("settings")
        return recorded is not None and entry["after"] == upstream and _substance(recorded) == _substance(settings)

    def finish(
        self, key: str, settings: dict[str, Any], upstream: dict[str, str], seconds: float, cpu_seconds: float, **info
    ) -> None:
        digest = settings_digest(settings, upstream)
        self.data[key] = {
            "done": True,
            "run_id": f"{digest[:16]}-{time.time_ns()}",
            "settings_sha256": digest,
            "settings": settings,
            "after": upstream,
            "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu_seconds, 1),  # all of the process's threads: honest on shared cores
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **info,
        }
        atomic_write_bytes(self.path, (json.dumps(self.data, indent=1, default=str) + "\n").encode())


class AttemptClock:
    """A stage attempt's wall and CPU time, on top of earlier stopped attempts of the same stage with
    the same digest (RUN/stages_partial.json, rewritten every `interval` s while the stage runs; the
    entry goes once the attempt finishes, or stays for the next when it raises)."""

    def __init__(self, root: Path, key: str, digest: str, interval: float, carry: bool = True) -> None:
        self.path, self.key, self.digest, self.interval = Path(root) / PARTIAL_NAME, key, digest, interval
        earlier = self._read().get(key) or {}
        same = carry and earlier.get("digest") == digest
        self.earlier_seconds = float(earlier.get("seconds", 0.0)) if same else 0.0
        self.earlier_cpu_seconds = float(earlier.get("cpu_seconds", 0.0)) if same else 0.0
        self.earlier_attempts = int(earlier.get("attempts", 0)) if same else 0
        self._stop = threading.Event()

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _write(self, entry: dict[str, Any] | None) -> None:
        data = self._read()
        if entry is None:
            data.pop(self.key, None)
        else:
            data[self.key] = entry
        atomic_write_bytes(self.path, (json.dumps(data, indent=1) + "\n").encode())

    def totals(self) -> tuple[float, float]:
        """(wall seconds, CPU seconds of all the process's threads) of this attempt and the earlier ones."""
        return (
            self.earlier_seconds + time.monotonic() - self.started,
            self.earlier_cpu_seconds + time.process_time() - self.cpu_started,
        )

    def _entry(self) -> dict[str, Any]:
        seconds, cpu_seconds = self.totals()
        attempts = self.earlier_attempts + 1
        return {"digest": self.digest, "seconds": seconds, "cpu_seconds": cpu_seconds, "attempts": attempts}

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self._write(self._entry())

    def __enter__(self) -> AttemptClock:
        self.started, self.cpu_started = time.monotonic(), time.process_time()
        self._thread = threading.Thread(target=self._beat, name=f"stage-clock {self.key}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        self._thread.join()
        self._write(None if exc_type is None else self._entry())


class Stages:
    """Runs stages in the order they are called, each unless it is done with the same settings."""

    def __init__(
        self,
        root: str | Path,
        *,
        redo: Iterable[str] = (),
        only: Iterable[str] | None = None,
        log: Callable[[str], None] = print,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.root = Path(root)
        self.heartbeat_s = heartbeat_s
        self.root.mkdir(parents=True, exist_ok=True)
        self.book = StageBook(self.root)
        self.redo = set(redo)
        self.only = None if only is None else set(only)
        self.log = log
        self.ran: list[str] = []  # stages that ran in this call, in order

    @staticmethod
    def _named(key: str, names: set[str]) -> bool:
        return key in names or key.split("/")[0] in names

    def status(self, key: str, settings: dict[str, Any], after: Iterable[str] = ()) -> tuple[bool, str]:
        """(must it run, why) for a stage with these settings."""
        upstream = {k: self.book.run_id(k) for k in after}
        entry = self.book.entry(key)
        if self._named(key, self.redo):
            return True, "--redo"
        if entry is None:
            return True, ""
        if self.book.matches(key, settings, upstream):
            return False, ""
        reasons = [f"setting {k}" for k in _changed_keys(entry.get("settings", {}), settings)]
        reasons += [f"stage {k} ran again" for k, r in upstream.items() if entry.get("after", {}).get(k) != r]
        return True, "changed since it ran: " + (", ".join(reasons) or "its settings")

    def run(
        self,
        key: str,
        settings: dict[str, Any],
        body: Callable[[], dict[str, Any] | None],
        *,
        after: Iterable[str] = (),
        fresh: Iterable[Path] = (),
    ) -> bool:
        """Run `body` for stage `key` if it must run (see the module doc); True if it ran. What
        `body` returns is recorded beside the settings."""
        if self.only is not None and not self._named(key, self.only):
            return False
        after = list(after)
        must, why = self.status(key, settings, after)
        if not must:
            self.log(f"{key}: done, skipped")
            return False
        if why:
            moved = self._supersede(key, fresh)
            self.log(f"{key}: {why}: running again" + (f" (earlier output kept in {moved})" if moved else ""))
        else:
            self.log(f"{key}: running")
        upstream = {k: self.book.run_id(k) for k in after}
        digest = settings_digest(_substance(settings), upstream)
        # A rerun's earlier output was moved aside: the time spent on it is not this result's.
        with AttemptClock(self.root, key, digest, self.heartbeat_s, carry=not why) as clock:
            info = body() or {}
        seconds, cpu_seconds = clock.totals()
        if clock.earlier_attempts:
            info = {"attempts": clock.earlier_attempts + 1, **info}
        self.book.finish(key, settings, upstream, seconds, cpu_seconds, **info)
        self.ran.append(key)
        self.log(f"{key}: done in {seconds:.0f} s" + (f" {json.dumps(info, default=str)}" if info else ""))
        return True

    def _supersede(self, key: str, outputs: Iterable[Path]) -> Path | None:
        existing = [Path(p) for p in outputs if Path(p).exists()]
        if not existing:
            return None
        target = self.root / SUPERSEDED_DIR / f"{key.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
        n = 1
        while target.exists():
            target = target.with_name(f"{target.name}-{n}")
            n += 1
        target.mkdir(parents=True)
        for path in existing:
            shutil.move(str(path), str(target / path.name))
        return target
