"""Every package under mediasrv/ is installed (setup.cfg lists packages explicitly)."""

from __future__ import annotations

import configparser

from tests.conftest import ROOT


def test_every_package_is_listed_in_setup_cfg() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = {p.strip() for p in cfg["options"]["packages"].split() if p.strip()}
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "mediasrv").rglob("__init__.py")}
    assert found - listed == set()
    assert "twisted.plugins" in listed
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists()
