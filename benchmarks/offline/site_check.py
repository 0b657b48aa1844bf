"""Each package bundle.sh packed must import beside the machine's own; run.sh and gpu_check.sh call
this after installing the wheels into SITE:

    python3 benchmarks/offline/site_check.py SITE NAME     # NAME: who speaks in the lines it prints

transformers 5.25 needs huggingface_hub >= 2.4, and the GPU image of 2026-11 has 1.33: a bundled
package that does not import gives way to the machine's own copy, said in one line (the bench's
results record the versions that ran). One that fails only because another bundled package does
(peft imports transformers) imports once that one has given way, so the check repeats until no
package gives way; a package that still does not import, with no copy on the machine, stops with
one line and exit 2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

WHEELS = Path(".offline/wheels")


def top_module(wheel: Path) -> str:
    """The module a wheel installs (hydra_core: hydra; pyyaml: yaml), from its top_level.txt or else
    the first entry of its RECORD outside the .dist-info."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        top = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        if top:
            modules = [m for m in zf.read(top[0]).decode().split() if not m.startswith("_")]
            if modules:
                return modules[0]
    first = next(n for n in names if not n.split("/")[0].endswith((".dist-info", ".data")))
    return first.split("/")[0].removesuffix(".py")


def import_error(module: str, site: str | None) -> str | None:
    """None where ``import module`` works (with SITE first on the path, or the machine's alone),
    else the error's last line."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and (site is None or p != site)]
    env["PYTHONPATH"] = os.pathsep.join(([site] if site else []) + paths)
    done = subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True, text=True)
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit {done.returncode}"


def machine_version(module: str, dist: str) -> str | None:
    """The machine's own copy's version, where it has one that imports (None: none)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = (f"import importlib.metadata as m, {module}\n"
            f"try:\n    print(m.version({dist!r}))\n"
            f"except m.PackageNotFoundError:\n    print(getattr({module}, '__version__', '?'))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def give_way(site: Path, module: str, dist: str) -> None:
    shutil.rmtree(site / module, ignore_errors=True)
    (site / f"{module}.py").unlink(missing_ok=True)
    for info in site.glob(f"{dist}-*.dist-info"):
        shutil.rmtree(info)


def main(site: str, who: str) -> int:
    bundled = {wheel.name.split("-")[0]: top_module(wheel) for wheel in sorted(WHEELS.glob("*.whl"))}
    gave_way = True
    while gave_way:
        gave_way = False
        for dist, module in list(bundled.items()):
            why = import_error(module, site)
            version = machine_version(module, dist) if why else None
            if why and version:
                give_way(Path(site), module, dist)
                del bundled[dist]
                gave_way = True
                print(f"{who}: the bundled {module} does not import here ({why}); this machine's {module} {version} "
                      "runs instead", file=sys.stderr)
    for dist, module in bundled.items():
        why = import_error(module, site)
        if why:
            print(f"{who}: the bundled {module} does not import here ({why}), and this machine has none of its own",
                  file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
