"""`slu-influence score|prune|refit|validate RUN_DIR`: MTIF data attribution (METHODS.md section 3).

    slu-influence score runs/atis-1 --scope heads --solver cg        # -> runs/atis-1/influence/
    slu-influence score runs/atis-90 --target-split heldout          # a run trained with data.train_fraction=0.9
    slu-influence prune runs/atis-1 --fraction 0.05 --target both    # -> runs/atis-1/pruned/<name>/
    slu-influence prune runs/atis-1 --fraction 0.05 --random         # same number dropped at random
    slu-influence prune runs/atis-1 --fraction 0.02 --unit sample    # drop intent or slot labels, not utterances
    slu-influence validate runs/atis-1 --n 40                        # leave-one-out + datamodeling
    slu-influence refit runs/atis-1 --fraction 0.02 --per-intent     # drop samples, refit the heads: a new run
    torchrun --nproc_per_node 4 -m slu_feedback.cli.influence score runs/atis-1   # sharded gradients

A joint run (one head pair per dataset) is scored per dataset: `score RUN` scores each
`RUN/<dataset>`; prune and validate take `RUN/<dataset>`.

Sign: positive influence = the sample HELPS the task (removing it would raise the task's
validation loss).
"""

from pathlib import Path

import click
from click.core import ParameterSource

from . import console_output

SCOPE = click.option("--scope", default="heads", show_default=True, type=click.Choice(["heads", "heads+last"]),
                     help="Parameters in the influence scope; the encoder below them is fixed.")
SOLVER = click.option("--solver", default="auto", show_default=True,
                      type=click.Choice(["auto", "explicit", "cg", "lissa"]),
                      help="Inverse-Hessian-vector solver (auto: explicit up to 5000 parameters, else cg).")
DAMPING = click.option("--damping", default=0.01, show_default=True, help="Added to the Hessian's diagonal.")
BATCH = click.option("--batch-size", default=64, show_default=True, help="Utterances per per-example-gradient batch.")


def _errors(fn):
    def wrapped(*args, **kwargs):
        from ..data.errors import DataError
        from ..models import RunError

        try:
            return fn(*args, **kwargs)
        except (DataError, RunError, ValueError) as error:
            raise click.ClickException(str(error)) from None

    wrapped.__name__, wrapped.__doc__ = fn.__name__, fn.__doc__
    return wrapped


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """MTIF: influence of each training utterance's intent and slot samples on each task's
    validation loss; pruning of harmful utterances or samples; a check against retraining."""
    console_output()


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@SCOPE
@SOLVER
@DAMPING
@BATCH
@click.option("--cg-iterations", default=1000, show_default=True, help="cg: maximum iterations.")
@click.option("--lissa-depth", default=1000, show_default=True, help="lissa: recursion depth.")
@click.option("--float32", is_flag=True, help="Compute in float32 (default float64).")
@click.option("--target-split", default="validation", show_default=True,
              type=click.Choice(["validation", "heldout", "test"]),
              help="Whose loss the influence is on. heldout: the part of the training split the run did not train "
                   "on (train it with data.train_fraction=0.9), leaving validation to choose the pruning fraction; "
                   "prune then puts that part back. test is a diagnostic (does what helps validation help test?): "
                   "prune refuses such scores; they go to RUN_DIR/influence_test unless --out says otherwise.")
@click.option("--out", "out_dir", default=None, help="Output folder (default: RUN_DIR/influence).")
@_errors
def score(run_dir, scope, solver, damping, batch_size, cg_iterations, lissa_depth, float32, target_split, out_dir):
    """Write influence.csv (one row per training utterance), summary.json (task relatedness
    matrix, top-10 helpful/harmful per task) and histogram.png."""
    import torch

    from ..models.joint import joint_datasets
    from ..influence.report import score_run

    kw = {"max_iter": cg_iterations, "depth": lissa_depth}  # the solver used (auto: cg or explicit) takes its own
    names = joint_datasets(run_dir)
    if names and out_dir:
        raise click.ClickException("--out applies to one dataset: pass RUN_DIR/<dataset> of a joint run")
    for name in names or [""]:  # a joint run: each dataset's heads are scored on its own data
        if name:
            click.echo(f"== {name} ==")
        run = f"{run_dir}/{name}" if name else run_dir
        summary = score_run(run, out_dir, scope, solver, damping, batch_size,
                            torch.float32 if float32 else torch.float64, target_split=target_split, **kw)
        if summary:  # the main process reports
            report_score(summary, scope, damping, out_dir or f"{run}/influence{'_test' if target_split == 'test' else ''}")


def report_score(summary: dict, scope: str, damping: float, out_dir: str) -> None:
    info = summary["solver"]
    click.echo(f"{summary['n_train']} utterances, scope {scope} ({summary['n_params']} parameters), "
               f"solver {info['solver']}, damping {damping}: {summary['seconds']['total']:.1f}s")
    if info.get("warning"):
        click.echo(f"warning: {info['warning']}", err=True)
    click.echo(f"mean influence on the {summary['target_split']} losses (rows: source samples, columns: target task; "
               "positive = helps)")
    click.echo(f"{'':>10} {'intent':>12} {'slot':>12}")
    for source, row in summary["relatedness_mean"].items():
        click.echo(f"{source:>10} {row['intent']:12.3e} {row['slot']:12.3e}")
    click.echo(f"wrote {out_dir}/influence.csv, summary.json, histogram.png")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--fraction", type=float, required=True, help="Fraction of training utterances (with --unit sample: of samples) to drop, e.g. 0.05.")
@click.option("--target", default="both", show_default=True, type=click.Choice(["intent", "slot", "both"]))
@click.option("--random", "random_", is_flag=True,
              help="Drop as many at random instead (utterances, or samples with --unit sample).")
@click.option("--per-intent", is_flag=True,
              help="Drop the fraction within each intent (keeps the intent distribution; rare intents lose none).")
@click.option("--unit", default="utterance", show_default=True, type=click.Choice(["utterance", "sample"]),
              help="Drop whole utterances, or single samples: an utterance's intent label or its slot labels "
                   "(written as JSONL with a null intent or null slots; the utterance still trains the other head).")
@click.option("--seed", default=0, show_default=True)
@click.option("--scores", default=None, help="influence.csv (or its folder) to rank by (default: RUN_DIR/influence/, "
                                            "scored there if absent; --scope and --damping apply to that scoring).")
@click.option("--out", "out_dir", default=None, help="Output folder (default: RUN_DIR/pruned/<name>).")
@click.option("--target-split", default=None, type=click.Choice(["validation", "heldout"]),
              help="MTIF's target: scores the run against it if it is not scored yet, and refuses scores made "
                   "against another split (default: whatever the scores were made against; validation when "
                   "scoring here).")
@SCOPE
@DAMPING
@_errors
def prune(run_dir, fraction, target, random_, per_intent, unit, seed, scores, out_dir, target_split, scope, damping):
    """Write the pruned training set (valid/ and test/ copied) and a recipe that trains on it."""
    from ..influence.report import prune_run

    # the scoring options apply only where the run is scored here; given, they must match existing scores
    given = {name: value for name, value in (("target_split", target_split), ("scope", scope), ("damping", damping))
             if click.get_current_context().get_parameter_source(name) is ParameterSource.COMMANDLINE}
    info = prune_run(run_dir, fraction, target, random_, seed, scores, out_dir, per_intent=per_intent, unit=unit,
                     **given)
    click.echo(f"dropped {info['dropped']} of {info['dropped'] + info['kept']} training {unit}s "
               f"({'random' if random_ else 'most harmful for ' + target})")
    if unit == "sample":
        click.echo(f"{info['utterances_kept']} utterances kept: {info['unlabelled']['intent']} without their intent, "
                   f"{info['unlabelled']['slot']} without their slots; {info['utterances_dropped']} left out")
    if info["heldout_rejoined"]:
        click.echo(f"plus the {info['heldout_rejoined']} training utterances the run did not train on "
                   f"(data.train_fraction < 1), put back unpruned")
    if "note" in info:
        click.echo(f"note: {info['note']}", err=True)
    if "warning" in info:
        click.echo(f"warning: {info['warning']}", err=True)
    click.echo(f"data: {info['data']}\nrecipe: {info['recipe']}\ntrain it: slu-train {info['recipe']}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--fraction", type=float, required=True,
              help="Fraction of training samples (or utterances) to drop, e.g. 0.02; 0 refits on the full set.")
@click.option("--target", default="both", show_default=True, type=click.Choice(["intent", "slot", "both"]))
@click.option("--random", "random_", is_flag=True, help="Drop the same number at random instead.")
@click.option("--per-intent", is_flag=True, help="Drop the fraction within each intent.")
@click.option("--unit", default="sample", show_default=True, type=click.Choice(["utterance", "sample"]),
              help="Drop single samples (an utterance's intent label or its slot labels) or whole utterances.")
@click.option("--seed", default=0, show_default=True, help="Seed of --random.")
@DAMPING
@click.option("--max-iter", default=500, show_default=True, help="L-BFGS iterations per fit.")
@click.option("--cg-iterations", default=1000, show_default=True, help="Maximum iterations of the cg solve.")
@click.option("--out", "out_dir", default=None, help="Output run directory (default: RUN_DIR/refit/<name>).")
@_errors
def refit(run_dir, fraction, target, random_, per_intent, unit, seed, damping, max_iter, cg_iterations, out_dir):
    """Prune within MTIF's scope: fit the heads on the fixed encoder (scope heads) to convergence,
    score MTIF there, drop the most harmful samples and refit the heads without them. Writes a run
    directory (slu-eval, slu-parse load it) with refit.json (predicted and actual change of each
    task's validation loss) and the scores in influence/. Minutes, not a training run."""
    from ..influence.refit import refit_run

    info = refit_run(run_dir, out_dir, fraction, target, random_, seed, per_intent, unit, damping, max_iter,
                     cg_iterations=cg_iterations)
    change = info["validation_loss_change"]
    click.echo(f"dropped {info['dropped']} training {unit}s ({'random' if random_ else 'most harmful for ' + target}); "
               f"heads refitted in {info['seconds']:.1f}s")
    if "warning" in info:
        click.echo(f"warning: {info['warning']}", err=True)
    for task in ("intent", "slot"):
        click.echo(f"{task:>7} validation loss change: predicted {change['predicted'][task]:+.3e}  "
                   f"actual {change['actual'][task]:+.3e}")
    click.echo(f"run: {info['out_dir']}\nevaluate it: slu-eval {info['out_dir']} --split validation")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--n", default=40, show_default=True, type=click.IntRange(min=1),
              help="Training utterances to leave out (each sample separately).")
@click.option("--subsets", default=20, show_default=True, type=click.IntRange(min=0),
              help="Random 50 % subsets for the datamodeling score.")
@SCOPE
@SOLVER
@DAMPING
@BATCH
@click.option("--seed", default=0, show_default=True)
@click.option("--max-iter", default=500, show_default=True, help="L-BFGS iterations per retraining.")
@click.option("--cg-iterations", default=1000, show_default=True, help="cg: maximum iterations.")
@click.option("--lissa-depth", default=1000, show_default=True, help="lissa: recursion depth.")
@click.option("--out", "out_dir", default=None, help="Output folder (default: RUN_DIR/influence).")
@_errors
def validate(run_dir, n, subsets, scope, solver, damping, batch_size, seed, max_iter, cg_iterations, lissa_depth,
             out_dir):
    """Retrain the scope without single samples (and on random halves) and compare the actual
    change of each task's validation loss with MTIF; writes validate.json and validate.png.
    Each retraining is appended to validate_rows.jsonl, so a rerun after an interruption resumes.

    Cost: 2 x N + SUBSETS retrainings of the scope. On the MiniLM ATIS heads one takes about a
    minute on a laptop CPU, so the defaults take hours; try --n 5 --subsets 0 first."""
    from ..influence.report import validate_run

    kw = {"max_iter": cg_iterations, "depth": lissa_depth}  # the solver used (auto: cg or explicit) takes its own
    result = validate_run(run_dir, n, scope, solver, damping, subsets, seed, batch_size, out_dir, max_iter, **kw)
    if result["solver"].get("warning"):
        click.echo(f"warning: {result['solver']['warning']}", err=True)
    for key, c in result["correlation"].items():
        click.echo(f"{key:>16}: pearson {_f(c['pearson'])}  spearman {_f(c['spearman'])}  (n={c['n']})")
    if subsets:
        for task in ("intent", "slot"):
            click.echo(f"datamodeling {task:>6}: spearman {_f(result['datamodel'][task]['spearman'])}")
    if n < 3:
        click.echo("(a correlation needs at least 3 points: n/a above; raise --n)")
    out = Path(out_dir) if out_dir else Path(run_dir) / "influence"
    click.echo(f"wrote {out / 'validate.json'}, validate.png and validate_rows.jsonl ({result['seconds']:.0f} s)")


def _f(x) -> str:
    return "  n/a" if x is None else f"{x:6.3f}"


if __name__ == "__main__":
    main()
