"""The ``pulsebeam`` command: a thin layer over the library.

Each command group lives in its own module and registers itself on :data:`app`. Errors are one
line on stderr; bad arguments and unusable settings exit with code 2.
"""

import sys

import typer

try:  # typer >= 0.29 vendors click and raises its own copies of click's exceptions
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer on the real click
    from click import exceptions as click_errors  # type: ignore[no-redef]

from pulsebeam.cli import accounts, bans, key_admin, keys, projects, serve, tokens
from pulsebeam.errors import ConfigError, InvalidArgumentError, PulseBeamError, TokenError

__all__ = ["app", "main"]

app = typer.Typer(
    name="pulsebeam",
    help="PulseBeam: self-hostable WebRTC signaling, TURN, tokens and console.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(tokens.app, name="token")
app.add_typer(keys.app, name="key")
keys.app.add_typer(key_admin.app)  # key create|list|delete beside key generate
app.add_typer(accounts.app, name="account")
app.add_typer(projects.app, name="project")
app.add_typer(bans.app, name="ban")
app.command("serve")(serve.serve)


def fail(message: str, code: int) -> None:
    typer.echo(f"pulsebeam: error: {message}", err=True)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    try:
        result = app(args=argv, prog_name="pulsebeam", standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:
        # A bare group shows its help (click >= 8.2 raises for it outside standalone mode).
        typer.echo(exc.ctx.get_help())
        raise SystemExit(0) from None
    except click_errors.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        fail(f"{exc.format_message()}{hint}", 2)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        fail("aborted", 130)
    except (ConfigError, InvalidArgumentError, TokenError) as exc:
        fail(str(exc), 2)
    except PulseBeamError as exc:
        fail(str(exc), 1)
    except click_errors.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    if isinstance(result, int) and result:
        sys.exit(result)
