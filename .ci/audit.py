"""pip-audit over the installed virtualenv (every pinned package and what it pulled in).

Fails (exit 1) when any installed package has a known vulnerability. pip-audit asks PyPI's JSON
API for each package; where that API cannot be reached (a registry mirror that serves only the
simple index), every package comes back "skipped": that is reported loudly, but it does not fail
the run, because it says nothing about our packages. docs/security.md says what to do then.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIP_AUDIT = ROOT / ".venv" / "bin" / "pip-audit"


def main() -> int:
    done = subprocess.run(  # noqa: S603  (our own fixed command line)
        [str(PIP_AUDIT), "--progress-spinner", "off", "--skip-editable", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        report = json.loads(done.stdout)
    except ValueError:
        print(f"pip-audit failed to run (exit {done.returncode}):\n{done.stderr}")
        return 1
    deps = report.get("dependencies", [])
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if "skip_reason" in d]
    audited = len(deps) - len(skipped)
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions", [])) or "no fixed release yet"
            print(f"VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})")
    summary = f"{audited} packages audited, {len(skipped)} skipped, {len(vulnerable)} vulnerable"
    print(f"pip-audit: {summary}")
    if deps and not audited:
        print(
            "pip-audit: WARNING: the vulnerability service could not be reached for any package; "
            "nothing was audited on this machine (see docs/security.md, 'Dependencies')."
        )
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
