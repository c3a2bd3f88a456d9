"""``voiceloop`` sub-command groups, one module each; every command parses options and calls library code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..settings import Settings, get_settings

DataOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="data directory (default: $VOICELOOP_DATA_DIR or ./data)")
]


def settings_for(data_dir: Path | None) -> Settings:
    """The settings, with ``--data-dir`` (when given) in place of the configured data directory."""
    return get_settings().with_data_dir(data_dir)
