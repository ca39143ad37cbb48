"""``pulsebeam serve``: run the platform. Its options are generated from the settings in
:mod:`pulsebeam.config` (one ``--flag`` per setting, also readable from ``PULSEBEAM_*`` and the
``--config`` TOML file), so a new setting appears here without touching this module."""

import inspect
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from pulsebeam.config import Config, load_config, setting_flags

__all__ = ["serve"]

_OWN_OPTIONS = {"config_file", "ready_file", "log_json", "log_level"}


def _serve(
    config_file: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file ([http], [store], …)")
    ] = None,
    ready_file: Annotated[
        Path | None,
        typer.Option(help="write the bound address here as JSON once listening (for scripts)"),
    ] = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="log one JSON object per line")] = (
        False
    ),
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
    **settings: Any,
) -> None:
    """Run signaling, TURN, the API and the console in one process."""
    from pulsebeam import server
    from pulsebeam.errors import ConfigError
    from pulsebeam.signaling.logs import configure_logging

    if log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"--log-level {log_level!r} is not DEBUG, INFO, WARNING or ERROR")
    flags = {name.replace("_", "-"): value for name, value in settings.items()}
    config = load_config(config_file, flags=flags)
    server.check_config(config)  # before logging is set up: bad settings are one clean line
    configure_logging(json_lines=log_json, level=log_level)

    def welcome(url: str, setup_link: str | None) -> None:
        first = (
            f"  first run: create the first account at {setup_link}\n"
            if setup_link
            else f"  console: {url}/console/\n"
        )
        typer.echo(
            f"PulseBeam is running at {url} (data in {config.store.data_dir}).\n"
            + first
            + f"  API: {url}/api/v1   signaling (gRPC-Web): {url}/grpc   SDK: {url}/sdk/\n"
            f"  health: {url}/healthz   metrics: {url}/metrics\n"
            "  next: in the console create a project and a key, mint tokens with\n"
            "        `pulsebeam token create`, and point a peer SDK at this server.\n"
            "  Ctrl+C stops it.",
            err=True,
        )

    server.run(config, ready_file=ready_file, on_ready=welcome)


# Boolean settings whose "off" switch has a shorter, documented name than --no-<flag>.
_OFF_SWITCHES = {"turn-enabled": "--no-turn"}


def _setting_parameters() -> list[inspect.Parameter]:
    params = []
    hints = typing.get_type_hints(Config)
    for flag, (section, _name, field) in sorted(setting_flags().items()):
        name = flag.replace("-", "_")
        hint = typing.get_type_hints(hints[section])[field.name]
        help_text = f"{field.metadata['help']} [env PULSEBEAM_{name.upper()}]"
        if hint is bool:
            off = _OFF_SWITCHES.get(flag, f"--no-{flag}")
            option = typer.Option(None, f"--{flag}/{off}", help=help_text, show_default=False)
            annotation: Any = bool | None
        else:
            option = typer.Option(None, f"--{flag}", help=help_text, show_default=False)
            annotation = str | None
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation
            )
        )
    return params


def _build() -> Any:
    """``_serve`` with one keyword parameter per setting, as typer reads signatures."""
    own = [p for p in inspect.signature(_serve).parameters.values() if p.name in _OWN_OPTIONS]

    def serve(**kwargs: Any) -> None:
        _serve(**kwargs)

    serve.__doc__ = _serve.__doc__
    serve.__signature__ = inspect.Signature([*own, *_setting_parameters()])  # type: ignore[attr-defined]
    return serve


serve = _build()
