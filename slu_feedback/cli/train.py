"""`slu-train RECIPE [key=value ...] [--resume]`"""

import os
import shlex
import sys

import click
import yaml

from ..data.errors import DataError
from . import console_output
from ..training.recipe import RecipeError, load_recipe


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--resume", is_flag=True, help="Continue the run in output_dir (default: the newest run of this recipe).")
@click.option("--overwrite", is_flag=True, help="Start over in an output_dir that already holds a run (it is deleted).")
@click.option("--detect-anomaly", is_flag=True, help="torch.autograd anomaly detection (slow; for NaN hunting).")
@click.option("--print-recipe", is_flag=True,
              help="Print the recipe as it would train (every key, defaults and overrides applied) and exit.")
def main(recipe, overrides, resume, overwrite, detect_anomaly, print_recipe):
    """Train a joint intent/slot model from a YAML RECIPE.

    Overrides use dotted keys, e.g. `slu-train recipes/atis.yaml optim.lr=1e-4 train.epochs=3`;
    `--print-recipe` lists every key with the value it would train with.
    """
    console_output(map_bars=True)
    recipe_path = recipe
    if print_recipe:
        try:
            resolved = load_recipe(recipe, overrides)
        except RecipeError as error:
            raise click.ClickException(str(error)) from None
        click.echo(yaml.safe_dump({k: v for k, v in resolved.items() if k not in ("recipe_dir", "recipe_name")},
                                  sort_keys=False), nl=False)
        return
    from ..training.trainer import TrainingError, train  # heavy imports after argument parsing

    try:
        recipe = load_recipe(recipe, overrides)
        run_dir = train(recipe, resume=resume, detect_anomaly=detect_anomaly, overwrite=overwrite)
    except (RecipeError, DataError, TrainingError) as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt as interrupt:
        raise click.ClickException(interrupted_message(interrupt, recipe_path, overrides)) from None
    if os.environ.get("RANK", "0") == "0":  # once, also under torchrun
        click.echo(f"run directory: {run_dir}")


def interrupted_message(interrupt, recipe_path: str, overrides) -> str:
    """What Ctrl-C left: the command that continues the run (its folder named, so that --resume finds
    this run and not the newest of the recipe), or that there is nothing to continue."""
    from ..training.trainer import TrainingInterrupted

    if not isinstance(interrupt, TrainingInterrupted) or not interrupt.started:
        return "interrupted before training started; no run was written"
    command = shlex.join(["slu-train", recipe_path, *(o for o in overrides if not o.startswith("output_dir=")),
                          f"output_dir={interrupt.run_dir}"])
    if interrupt.epochs_kept:
        return (f"interrupted; {interrupt.run_dir} keeps epoch {interrupt.epochs_kept}'s checkpoint: "
                f"continue with {command} --resume")
    return (f"interrupted before the first epoch ended: {interrupt.run_dir} has nothing to continue; "
            f"start it again with {command} --overwrite")


if __name__ == "__main__":
    sys.exit(main())
