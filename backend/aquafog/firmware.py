"""The meter firmware this aquafog ships: where its files are, and its own config validator.

`aquafog flash` copies main.py and aquameter/*.py to boards; provisioning checks every
config.json with `aquameter.config.validate`, so a value the meter would refuse fails at
the desk. The files are the repository's firmware/ folder: `meter_firmware` is a symlink
to it in a checkout (and an editable install), and a copy of main.py, aquameter/*.py and
config.example.json in a wheel (backend/pyproject.toml, package-data). firmware/meters/
(the meters' secrets) is never packaged.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

_SHIPPED = Path(__file__).resolve().parent / "meter_firmware"
_PRIVATE_CONFIG = "aquafog._firmware_config"  # only for a foreign `aquameter` already loaded (below)


def path() -> Path:
    """The folder holding main.py, aquameter/ and config.example.json."""
    return _SHIPPED.resolve()


def checkout_meters_dir() -> Path | None:
    """firmware/meters of the repository checkout this aquafog runs from; None when it is
    installed from a wheel (there is no checkout to keep the meters' configs in)."""
    link = Path(__file__).resolve().parent / "meter_firmware"
    return path() / "meters" if link.is_symlink() else None


def _same_dir(a, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def config_module() -> ModuleType:
    """The firmware's `aquameter.config`, loaded once per process under its own name.

    The emulator and the tests already import the firmware as the top-level package
    `aquameter` (from firmware/ on sys.path); the same files loaded again under a second
    name would make two copies of every module and class. So: the `aquameter` already
    loaded when it is these files, else these files as `aquameter`. Only if another
    `aquameter` is loaded (a different copy) is config.py, which imports nothing, loaded
    alone under a private name."""
    folder = path() / "aquameter"
    pkg = sys.modules.get("aquameter")
    if pkg is None:
        spec = importlib.util.spec_from_file_location("aquameter", folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        pkg = importlib.util.module_from_spec(spec)
        sys.modules["aquameter"] = pkg
        try:
            spec.loader.exec_module(pkg)
        except BaseException:
            del sys.modules["aquameter"]
            raise
    if any(_same_dir(p, folder) for p in getattr(pkg, "__path__", ())):
        return importlib.import_module("aquameter.config")
    module = sys.modules.get(_PRIVATE_CONFIG)
    if module is None:
        spec = importlib.util.spec_from_file_location(_PRIVATE_CONFIG, folder / "config.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[_PRIVATE_CONFIG] = module
    return module


def validate(raw: dict) -> tuple[dict, list[str]]:
    """The firmware's verdict on a config.json: (the config with defaults, every error as
    `<key>: <problem>`), exactly what main.py applies at boot."""
    cfg, errors = config_module().validate(raw)
    return cfg, list(errors)
