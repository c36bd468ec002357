"""The `hexzd` command line."""
import importlib
import json

import click

from hexzd import __version__


@click.group()
@click.version_option(__version__, prog_name="hexzd")
def main():
    """hexzd: a single-machine AlphaZero trainer for the game of Hex."""


BENCHMARKS = ("engine", "mcts", "net")


@main.command()
@click.argument("name", type=click.Choice(BENCHMARKS))
@click.option("--size", default=9, show_default=True, type=click.IntRange(2, 19), help="board side n")
@click.option("--seconds", default=3.0, show_default=True, type=click.FloatRange(min=0.1),
              help="time per measurement")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def bench(name, size, seconds, as_json):
    """Time hexzd against a baseline measured in the same run."""
    module = importlib.import_module(f"hexzd.benchmarks.{name}")
    try:
        result = module.run(size=size, seconds=seconds)
    except ModuleNotFoundError as e:
        raise click.ClickException(
            f"the baseline needs {e.name}: pip install 'hexzd[bench]'") from None
    if as_json:
        click.echo(json.dumps(result))
    else:
        module.report(result)
