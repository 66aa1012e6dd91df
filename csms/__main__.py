"""`python -m csms` runs the CSMS, like `evfleet csms` (the csms's own commands only, without the
composition root in `evfleet.app.cli`, so the csms package never imports the others)."""

import sys

import typer

from csms.cli_commands import register


def run_csms_main() -> None:
    """Entry point of `python -m csms`: the same as `evfleet csms`."""
    app = typer.Typer(name="evfleet", pretty_exceptions_enable=False, rich_markup_mode=None,
                      add_completion=False)
    register(app)
    app(["csms", *sys.argv[1:]], prog_name="python -m csms")


if __name__ == "__main__":
    run_csms_main()
